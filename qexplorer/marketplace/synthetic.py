"""A synthetic second-hand marketplace with disguised toxic clusters, generated offline.

Benign listings (English and Chinese) are ordinary second-hand goods, including innocent
look-alikes of the toxic vocabulary (snow boots, rock sugar, a real watch). Each toxic cluster
is one seller network: it shares code words, a contact handle and a template, and disguises
them the way sellers do to slip past classifiers: spaced letters, digit-for-letter spellings,
emoji, split Chinese characters. A good query finds a seed's siblings; a generic one ("fast
delivery", "九成新") finds ordinary listings. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from qexplorer.marketplace.items import LabelledItem, to_listing_dict

# --- benign listings -----------------------------------------------------------------------

_EN_PRODUCTS: dict[str, tuple[tuple[str, int], ...]] = {
    # category: (product, typical price in EUR)
    "electronics": (("iPhone 12 64GB", 320), ("Galaxy S21", 280), ("iPad Air 4th gen", 350),
                    ("MacBook Pro 2019 13 inch", 650), ("Kindle Paperwhite", 70),
                    ("Nintendo Switch", 190), ("PS4 controller", 30), ("AirPods Pro", 110),
                    ("Canon EOS 600D camera", 240), ("Bose QC35 headphones", 140),
                    ("GoPro Hero 8", 160), ("Dell 24 inch monitor", 90),
                    ("Garmin Forerunner watch", 130), ("Sony Walkman", 45),
                    ("mechanical keyboard", 60), ("wireless mouse", 15)),
    "fashion": (("Levi's 501 jeans", 35), ("Nike Air Max 90", 60), ("North Face puffer jacket", 90),
                ("leather handbag", 55), ("wool scarf", 15), ("snow boots size 39", 30),
                ("Ray-Ban sunglasses", 50), ("silk summer dress", 25), ("Casio vintage watch", 25),
                ("Seiko automatic watch", 140), ("white sneakers", 30), ("rain coat", 20)),
    "home": (("IKEA Billy bookshelf", 40), ("oak coffee table", 80), ("ice cube tray set", 6),
             ("cast iron pan", 25), ("desk lamp", 15), ("Dyson V8 vacuum", 150),
             ("air fryer", 45), ("espresso machine", 120), ("snow globe collection", 20),
             ("powder blue curtains", 18), ("green plant pots", 12), ("sofa bed", 160)),
    "kids": (("LEGO Star Wars set", 45), ("baby stroller", 120), ("car seat", 60),
             ("wooden puzzle", 8), ("kids bike 16 inch", 55), ("candy dispenser toy", 10),
             ("baby monitor", 35), ("high chair", 40), ("plush toys bundle", 12)),
    "sports": (("road bike 54cm", 380), ("yoga mat", 15), ("dumbbells 2x10kg", 40),
               ("tennis racket", 35), ("ski goggles", 25), ("snowboard 152cm", 140),
               ("camping tent 3 person", 70), ("climbing shoes", 45), ("football boots", 30)),
    "books": (("Harry Potter box set", 35), ("Calculus 8th edition textbook", 30),
              ("Italian cookbook", 12), ("comic collection", 25), ("travel guide Japan", 8),
              ("chemistry textbook", 28), ("crime novels bundle", 10)),
    "health": (("vitamin C tablets sealed", 8), ("blood pressure monitor", 25),
               ("whey protein powder 2kg", 35), ("first aid kit", 15), ("massage gun", 50)),
    "garden": (("lawn mower", 90), ("garden hose 20m", 18), ("herb seeds kit", 9),
               ("leaf blower", 45), ("green house frame", 75)),
}
_EN_ADJECTIVES = ("", "Used", "Like new", "Barely used", "Vintage", "Great condition",
                  "Brand new", "Good condition", "Working", "Clean")
_EN_CONDITIONS = ("in great condition", "barely used", "a few scratches but works perfectly",
                  "never used, still in the box", "well looked after", "some signs of wear",
                  "fully working, battery fine", "washed and clean")
_EN_REASONS = ("Moving abroad so everything must go.", "Upgraded to a newer one.",
               "Kids outgrew it.", "Unwanted gift.", "Clearing out the garage.",
               "Bought two by mistake.", "No longer needed.", "Downsizing.")
_EN_DELIVERY = ("Pick up in {city} or I can post it.", "Collection only from {city}.",
                "Can post, buyer pays shipping.", "Fast delivery, ships next day.",
                "Meet in {city} centre.", "Free local delivery around {city}.")
_EN_EXTRAS = ("Price is firm.", "Open to offers.", "Message me with any questions.",
              "Smoke free home.", "Receipt available.", "Check my other listings.",
              "First come first served.", "Cash or bank transfer.", "")
_EN_CITIES = ("London", "Leeds", "Bristol", "Dublin", "Berlin", "Amsterdam", "Manchester",
              "Glasgow", "Cardiff", "Brighton")

_ZH_PRODUCTS: dict[str, tuple[tuple[str, int], ...]] = {
    "electronics": (("iPhone 12 手机", 2200), ("华为 Mate 40", 1800), ("小米平板", 900),
                    ("佳能相机", 1600), ("索尼耳机", 600), ("任天堂 Switch", 1300),
                    ("机械键盘", 200), ("电子手表", 300)),
    "fashion": (("羽绒服", 300), ("雪地靴", 120), ("真皮手包", 400), ("运动鞋", 200),
                ("机械手表", 900), ("丝巾", 80)),
    "home": (("书架", 150), ("电饭煲", 120), ("空气炸锅", 180), ("台灯", 60), ("沙发", 800),
             ("老冰糖 云南 500g", 20), ("茶叶 铁观音", 90), ("绿萝 盆栽 叶子很茂盛", 25)),
    "kids": (("婴儿推车", 400), ("儿童自行车", 200), ("乐高积木", 250), ("奶粉 未开封", 150),
             ("儿童安全座椅", 350)),
    "sports": (("公路自行车", 1500), ("瑜伽垫", 50), ("哑铃", 120), ("滑雪板", 900),
               ("帐篷", 300)),
    "books": (("考研教材", 60), ("小说 全套", 80), ("英语词典", 40), ("漫画书", 50)),
    "collectibles": (("和田玉 手镯 带证书", 1200), ("紫檀 手串", 300), ("老邮票", 200),
                     ("木雕 摆件", 260), ("核桃 手串", 150)),
}
_ZH_CONDITIONS = ("九成新", "全新未拆封", "用了半年", "八成新有划痕", "几乎全新", "正常使用痕迹",
                  "功能完好")
_ZH_REASONS = ("搬家急出", "换新了闲置", "买错尺码", "孩子长大了用不上", "闲置转让",
               "送人的礼物用不上")
_ZH_DELIVERY = ("同城自提 {city}", "包邮", "{city} 可面交", "顺丰到付", "可小刀", "不退不换")
_ZH_CITIES = ("北京", "上海", "广州", "深圳", "杭州", "成都", "南京", "武汉")
_SELLER_WORDS = ("anna", "tom", "li", "mike", "sara", "wei", "jo", "max", "lena", "chen",
                 "kate", "sam", "yan", "olga", "raj", "emma")


def _benign_en(rng: random.Random) -> LabelledItem:
    category = rng.choice(sorted(_EN_PRODUCTS))
    product, base = rng.choice(_EN_PRODUCTS[category])
    adjective = rng.choice(_EN_ADJECTIVES)
    title = f"{adjective} {product}".strip()
    city = rng.choice(_EN_CITIES)
    parts = [f"Selling my {product}, {rng.choice(_EN_CONDITIONS)}.",
             rng.choice(_EN_REASONS),
             rng.choice(_EN_DELIVERY).format(city=city),
             rng.choice(_EN_EXTRAS)]
    if rng.random() < 0.5:
        parts.insert(1, f"Bought it {rng.randint(2, 36)} months ago.")
    price = round(base * rng.uniform(0.5, 1.3), 0)
    return LabelledItem(id="", title=title, description=" ".join(p for p in parts if p),
                        category=category, price=price, seller=_seller(rng), language="en")


def _benign_zh(rng: random.Random) -> LabelledItem:
    category = rng.choice(sorted(_ZH_PRODUCTS))
    product, base = rng.choice(_ZH_PRODUCTS[category])
    condition = rng.choice(_ZH_CONDITIONS)
    city = rng.choice(_ZH_CITIES)
    title = f"{product} {condition}" if rng.random() < 0.6 else f"出 {product}"
    parts = [f"二手{product}，{condition}", rng.choice(_ZH_REASONS),
             rng.choice(_ZH_DELIVERY).format(city=city)]
    if rng.random() < 0.5:
        parts.insert(2, f"买了{rng.randint(2, 24)}个月")
    price = round(base * rng.uniform(0.5, 1.3), 0)
    return LabelledItem(id="", title=title, description="，".join(parts) + "。",
                        category=category, price=price, seller=_seller(rng), language="zh")


def _seller(rng: random.Random) -> str:
    return f"{rng.choice(_SELLER_WORDS)}_{rng.choice(_SELLER_WORDS)}{rng.randint(1, 999)}"


# --- toxic clusters ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSpec:
    """One seller network: its vocabulary, contact handles and listing templates."""

    name: str
    language: str
    categories: tuple[str, ...]
    code_words: tuple[str, ...]
    handles: tuple[str, ...]
    titles: tuple[str, ...]
    descriptions: tuple[str, ...]
    fillers: tuple[str, ...]
    price: tuple[int, int]


CLUSTERS: tuple[ClusterSpec, ...] = (
    ClusterSpec(
        "snow", "en", ("home", "fashion"),
        ("snow", "white powder", "colombian flake", "nose candy", "yayo"),
        ("tg @frosty_plug", "wickr: frostyplug", "telegram frosty_plug"),
        ("{w} {e} premium {q}", "{w} {e} {w2}", "Fresh {w} {e} {q}", "{w} for the weekend {e}"),
        ("Pure {w}, {pct}% {w2}. {f}. Contact {h}.", "{q} of {w}, {f}. {h} {e}",
         "Best {w} in {city}. {f}. Ask {h} for the menu."),
        ("Discreet packaging", "Fast delivery", "Stealth shipping", "Same day drop",
         "Weekend deals"), (40, 90)),
    ClusterSpec(
        "pills", "en", ("health", "books"),
        ("xanax bars", "percs", "oxy 30s", "blues", "M30"),
        ("snap: pharma_king", "snapchat pharma_king", "sc pharmaking"),
        ("{w} {e} {q}", "Pharmacy grade {w} {e}", "{w} / {w2} {e}", "{q} {w} restock {e}"),
        ("{w} and {w2} available, {q} minimum. {f}. {h}",
         "Legit {w}, pharmacy grade. {f}. Add {h}", "Restocked {w} {e}. {f}. {h}"),
        ("No prescription needed", "Discreet packaging", "Tracked shipping", "Bulk discount"),
        (20, 80)),
    ClusterSpec(
        "weed", "en", ("garden", "home"),
        ("zaza", "loud pack", "kush", "gas", "exotic buds"),
        ("tg @greenleaf_uk", "telegram greenleaf_uk", "tg: greenleafuk"),
        ("{w} {e} {q}", "Top shelf {w} {e}", "{w} {w2} {e}", "420 {w} {e}"),
        ("Top shelf {w}, {q} bags. {f}. {h}", "{w} and {w2} on the menu. {f}. Message {h}",
         "Cali {w} {e}. {f}. {h}"),
        ("420 friendly", "Fast delivery", "Local drop", "Weekend deals"), (25, 120)),
    ClusterSpec(
        "replica", "en", ("fashion", "electronics"),
        ("replica", "AAA 1:1", "superclone", "rolx", "mirror grade"),
        ("whatsapp +44 7700 900318", "wa 07700900318", "WhatsApp 07700 900318"),
        ("{w} Sub {e}", "{w} watch {e} {w2}", "Swiss {w} {e}", "{w} daytona {e}"),
        ("{w} quality, {w2}, looks identical to the real one. {f}. {h}",
         "{w} watches, all models. {f}. Order on {h}", "{w2} {w}. {f}. {h}"),
        ("Comes with box and papers", "Worldwide shipping", "Fast delivery", "Bulk discount"),
        (90, 250)),
    ClusterSpec(
        "fake_id", "en", ("books", "electronics"),
        ("novelty ID", "scannable", "real database", "passp0rt", "DL"),
        ("tg @doc_master", "telegram doc_master", "tg: docmaster"),
        ("{w} {e} {w2}", "{w} cards {e}", "Premium {w} {e}", "{w} all states {e}"),
        ("{w}, {w2}, passes UV and barcode. {f}. {h}", "Any state {w}. {f}. Contact {h}",
         "{w2} {w} {e}. {f}. {h}"),
        ("Fast turnaround", "Discreet packaging", "Tracked shipping", "Bulk discount"),
        (80, 300)),
    ClusterSpec(
        "accounts", "en", ("electronics", "books"),
        ("netflix 4k lifetime", "spotify premium acc", "fresh logs", "fullz", "cracked accs"),
        ("discord vaultshop#2231", "dc vaultshop 2231", "discord: vaultshop"),
        ("{w} {e} cheap", "{w} {e} {w2}", "{w} instant {e}", "{q} {w} {e}"),
        ("{w} and {w2}, instant delivery. {f}. {h}", "Selling {w}, warranty included. {f}. {h}",
         "{w} {e}. {f}. Join {h}"),
        ("Instant delivery", "Warranty included", "Bulk discount", "Auto replace"), (3, 30)),
    ClusterSpec(
        "weapons", "en", ("sports", "garden"),
        ("80 lower", "ghost kit", "solvent trap", "no serial", "pew pew"),
        ("tg @ironworks_88", "telegram ironworks_88", "tg: ironworks88"),
        ("{w} {e} kit", "{w} jig {e}", "{w} {w2} {e}", "Complete {w} {e}"),
        ("{w} with jig, {w2}. {f}. {h}", "{w}, {w2}, ships in plain box. {f}. {h}",
         "{w} {e}. {f}. {h}"),
        ("Discreet packaging", "No questions asked", "Fast delivery", "Cash only"), (60, 400)),
    ClusterSpec(
        "ivory", "zh", ("collectibles", "home"),
        ("象牙", "白料", "老料", "犀角", "牙雕"),
        ("薇 ivory_888", "V: ivory_888", "➕V ivory888"),
        ("{w} 手串 {e}", "{w} {w2} 摆件 {e}", "纯天然 {w} {e}", "{w} 老物件 {e}"),
        ("{w} {w2}，油性好，{f}，{h}", "收藏级 {w}，{f}，联系 {h}", "{w}{e}，{f}，{h}"),
        ("包真", "懂的来", "私聊", "量大从优"), (800, 5000)),
    ClusterSpec(
        "ice", "zh", ("home", "health"),
        ("冰糖", "溜冰", "猪肉", "叶子", "飞行"),
        ("➕V bingtang520", "薇 bingtang520", "V: bingtang_520"),
        ("{w} {e} 纯度高", "上好 {w} {e}", "{w} {w2} {e}", "{w} 同城 {e}"),
        ("{w} {w2} 都有，{f}，{h}", "纯 {w}，{pct}%，{f}，加 {h}", "{w}{e}，{f}，{h}"),
        ("同城闪送", "懂的来", "私聊", "安全保密"), (200, 1500)),
    ClusterSpec(
        "certificates", "zh", ("books", "home"),
        ("办证", "学信网可查", "毕业证", "刻章", "驾驶证"),
        ("q q 2837 1190", "QQ 28371190", "扣 28371190"),
        ("{w} {e} {w2}", "专业 {w} {e}", "{w} 加急 {e}", "{w} 全国 {e}"),
        ("{w}，{w2}，{f}，{h}", "各类 {w}，{f}，联系 {h}", "{w}{e}，{f}，{h}"),
        ("可先验后付", "加急三天", "保密", "全国包邮"), (300, 3000)),
    ClusterSpec(
        "loans", "zh", ("books", "electronics"),
        ("网贷", "秒批", "无视黑白户", "口子", "包下款"),
        ("TG @kuaidai_88", "电报 kuaidai88", "TG kuaidai_88"),
        ("{w} {e} {w2}", "{w} 当天 {e}", "新 {w} {e}", "{w} {w2} 不看征信 {e}"),
        ("{w}，{w2}，{f}，{h}", "最新 {w}，{f}，{h}", "{w}{e}，{f}，咨询 {h}"),
        ("不看征信", "当天到账", "私聊", "手续简单"), (0, 10)),
    ClusterSpec(
        "cigarettes", "zh", ("home", "collectibles"),
        ("免税烟", "一手货源", "外烟", "电子烟油", "yan"),
        ("➕V yanhang_666", "薇 yanhang666", "V: yanhang_666"),
        ("{w} {e} {w2}", "{w} 批发 {e}", "正品 {w} {e}", "{w} 整条 {e}"),
        ("{w}，{w2}，{f}，{h}", "{w} 各种品牌，{f}，加 {h}", "{w}{e}，{f}，{h}"),
        ("量大从优", "全国包邮", "私聊", "支持验货"), (100, 600)),
)

_EMOJI: dict[str, tuple[str, ...]] = {
    "snow": ("❄️", "⛷️", "☃️"), "pills": ("💊", "💤"), "weed": ("🍃", "🔥", "💨"),
    "replica": ("⌚", "💎"), "fake_id": ("🪪", "🆔"), "accounts": ("🔑", "📺"),
    "weapons": ("🔫", "💥"), "ivory": ("🐘", "🦏"), "ice": ("❄️", "🧊"),
    "certificates": ("📜", "🎓"), "loans": ("💰", "💸"), "cigarettes": ("🚬", "📦"),
}
_QUANTITIES = ("1g", "3.5g", "7g", "half oz", "an 8th", "10 pack", "50 pcs", "bulk")
_LEET = str.maketrans({"o": "0", "e": "3", "a": "4", "i": "1", "s": "$", "l": "1"})


def disguise(word: str, rng: random.Random, emoji: Sequence[str]) -> str:
    """Disguise a code word as sellers do: spacing, digit spellings, emoji or punctuation."""
    style = rng.randrange(5)
    if style == 0:
        return word
    if style == 1:  # "s n o w", "象 牙"
        return " ".join(word.replace(" ", ""))
    if style == 2:  # "sn0w", "$n0w"
        return word.translate(_LEET) if word.isascii() else "·".join(word)
    if style == 3:  # "sn❄️ow"
        cut = max(1, len(word) // 2)
        return f"{word[:cut]}{rng.choice(emoji)}{word[cut:]}"
    return word.upper() if word.isascii() else f"【{word}】"


def _toxic(spec: ClusterSpec, rng: random.Random) -> LabelledItem:
    emoji = _EMOJI[spec.name]
    w, w2 = rng.sample(spec.code_words, 2)
    city = rng.choice(_EN_CITIES if spec.language == "en" else _ZH_CITIES)
    fields = {"w": disguise(w, rng, emoji), "w2": disguise(w2, rng, emoji),
              "e": "".join(rng.choices(emoji, k=rng.randint(1, 3))),
              "q": rng.choice(_QUANTITIES), "pct": rng.randint(80, 99),
              "f": rng.choice(spec.fillers), "h": rng.choice(spec.handles), "city": city}
    title = rng.choice(spec.titles).format(**fields)
    description = rng.choice(spec.descriptions).format(**fields)
    low, high = spec.price
    return LabelledItem(id="", title=title, description=description,
                        category=rng.choice(spec.categories),
                        price=float(rng.randint(low, high)), seller=_seller(rng),
                        language=spec.language, harmful=True, cluster=spec.name)


# --- the marketplace -----------------------------------------------------------------------


def generate_marketplace(n_benign: int = 2_000, n_clusters: int = 12,
                         per_cluster: tuple[int, int] = (8, 20), seed: int = 7,
                         chinese_share: float = 0.25) -> list[LabelledItem]:
    """Benign listings plus ``n_clusters`` disguised toxic clusters, shuffled, with opaque ids.

    Deterministic in its arguments. Every text is unique, so no query scores by finding
    copies. Clusters are taken from :data:`CLUSTERS` in order (English ones first, then
    Chinese, interleaved so that a small ``n_clusters`` still has both languages).
    """
    if not 0 <= n_clusters <= len(CLUSTERS):
        raise ValueError(f"n_clusters must be between 0 and {len(CLUSTERS)}")
    rng = random.Random(seed)
    english = [c for c in CLUSTERS if c.language == "en"]
    chinese = [c for c in CLUSTERS if c.language == "zh"]
    order = [c for pair in zip(english, chinese, strict=False) for c in pair]
    order += english[len(chinese):]
    seen: set[tuple[str, str]] = set()
    items: list[LabelledItem] = []

    def add(make, *args) -> None:
        for _ in range(50):
            item = make(*args, rng)
            if (item.title, item.description) not in seen:
                seen.add((item.title, item.description))
                items.append(item)
                return
        # template space exhausted for this draw: make it unique with a reference number
        item = make(*args, rng)
        ref = f" ref {len(items)}"
        items.append(LabelledItem(**{**item.to_dict(), "description": item.description + ref}))

    for spec in order[:n_clusters]:
        for _ in range(rng.randint(*per_cluster)):
            add(_toxic, spec)
    for _ in range(n_benign):
        add(_benign_zh if rng.random() < chinese_share else _benign_en)
    rng.shuffle(items)
    width = len(str(len(items)))
    return [LabelledItem(**{**item.to_dict(), "id": f"lst-{n:0{width}d}"})
            for n, item in enumerate(items)]


def split_seeds(items: Iterable[LabelledItem], fraction: float, seed: int = 0
                ) -> list[LabelledItem]:
    """The harmful items a moderator has confirmed: ``fraction`` of each cluster.

    At least one per cluster is confirmed, and at least one stays unconfirmed where the
    cluster has two or more, so every seed has a sibling left to find. Items without a cluster
    are sampled at ``fraction`` overall.
    """
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    rng = random.Random(seed)
    clusters: dict[str | None, list[LabelledItem]] = defaultdict(list)
    for item in items:
        if item.harmful:
            clusters[item.cluster].append(item)
    seeds: list[LabelledItem] = []
    for name in sorted(clusters, key=lambda c: (c is None, c or "")):
        members = sorted(clusters[name], key=lambda i: i.id)
        if name is None:
            seeds += rng.sample(members, round(fraction * len(members)))
            continue
        count = max(1, round(fraction * len(members)))
        if len(members) > 1:
            count = min(count, len(members) - 1)
        seeds += rng.sample(members, count)
    return sorted(seeds, key=lambda i: i.id)


def write_jsonl(items: Sequence[LabelledItem], path: Path, labels: bool = True) -> None:
    """Write items as JSONL: with their labels (``harmful``, ``cluster``) or as bare listings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for item in items:
            row = item.to_dict() if labels else to_listing_dict(item)
            out.write(orjson.dumps(row) + b"\n")
