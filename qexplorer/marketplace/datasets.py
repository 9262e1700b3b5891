"""Readers for the real labelled sets in ``../shared/datasets`` and a generic labelled JSONL.

Each reader turns one public set into :class:`LabelledItem` rows with stable ids, the harmful
label and, where the set has a reliable one, a cluster (the Dream Market vendor). The sets are
read in place, never copied into the project. ``marketplace_sample`` turns a dense set into a
marketplace-like one (all benign rows, a per-cluster sample of the harmful ones).
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

from qexplorer.config import PathsSettings
from qexplorer.marketplace.items import LabelledItem

csv.field_size_limit(10_000_000)


def datasets_dir() -> Path:
    """``QEXPLORER_DATASETS_DIR``, else ``../shared/datasets`` beside the project root."""
    return PathsSettings().datasets_dir


def _sms_spam(root: Path) -> Iterator[LabelledItem]:
    with (root / "sms_spam_collection" / "SMSSpamCollection").open(encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)  # header: Label, SMS
        for n, row in enumerate(rows):
            if len(row) >= 2:
                yield LabelledItem(id=f"sms-{n:05d}", title="\t".join(row[1:]).strip(),
                                   language="en", harmful=row[0] == "spam")


def _youtube_spam(root: Path) -> Iterator[LabelledItem]:
    for path in sorted((root / "youtube_spam_collection").glob("Youtube0*.csv")):
        video = path.stem.split("-", 1)[-1]
        with path.open(encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f)):  # comment ids repeat: number the rows
                spam = row["CLASS"].strip() == "1"
                yield LabelledItem(id=f"yt-{video}-{n:04d}", title=row["CONTENT"].strip(),
                                   category=video, seller=row["AUTHOR"], language="en",
                                   harmful=spam)


def _scamspot_instagram(root: Path) -> Iterator[LabelledItem]:
    with (root / "scamspot_instagram" / "comments-rated.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield LabelledItem(id=f"ig-{row['number']}", title=row["msg"].strip(), language="en",
                               harmful=row["scam"].strip() == "1")


def _split_title_description(body: str) -> tuple[str, str]:
    """``title,"description"``: CSV quoting where the title is quoted, else the first ``,"``."""
    if body.startswith('"'):
        row = next(csv.reader([body]))
        return row[0].strip(), ",".join(row[1:]).strip()
    cut = body.find(',"')
    if cut < 0 or not body.endswith('"'):
        return body.strip(), ""
    return body[:cut].strip(), body[cut + 2:-1].replace('""', '"').strip()


def _cryptoscamhunter(root: Path) -> Iterator[LabelledItem]:
    for split in ("training", "testing"):
        path = root / "cryptoscamhunter_youtube" / f"{split}.txt"
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f):
                body, _, label = line.rstrip("\n").rpartition("\t")
                if not body:
                    continue
                title, description = _split_title_description(body)
                yield LabelledItem(id=f"csh-{split}-{n:04d}", title=title,
                                   description=description, language="en",
                                   harmful=label.strip() == "True")


def _dream_market(root: Path) -> Iterator[LabelledItem]:
    path = root / "dream_market_cocaine_listings" / "dream_market_cocaine_listings.csv"
    with path.open(encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f)):
            vendor = row["vendor_name"].strip()
            yield LabelledItem(id=f"dm-{n:05d}", title=row["product_title"].strip(),
                               seller=vendor, language="en", harmful=True,
                               cluster=f"vendor:{vendor}")


#: Name -> reader of one set in ../shared/datasets.
DATASETS: dict[str, Callable[[Path], Iterator[LabelledItem]]] = {
    "sms_spam": _sms_spam,
    "youtube_spam": _youtube_spam,
    "scamspot_instagram": _scamspot_instagram,
    "cryptoscamhunter": _cryptoscamhunter,
    "dream_market": _dream_market,
}


def load_dataset(name: str, max_items: int | None = None, seed: int = 0) -> list[LabelledItem]:
    """Read one named set; ``max_items`` keeps a seeded random sample of that size.

    Raises FileNotFoundError when ``../shared/datasets`` (or the set in it) is missing, and
    KeyError for an unknown name.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    root = datasets_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"no datasets folder at {root} (set QEXPLORER_DATASETS_DIR)")
    items = [i for i in DATASETS[name](root) if i.title or i.description]
    if max_items is not None and len(items) > max_items:
        items = sorted(random.Random(seed).sample(items, max_items), key=lambda i: i.id)
    return items


def read_jsonl(path: Path) -> list[LabelledItem]:
    """Read the generic labelled format: one JSON object a line.

    Fields: ``id``, ``text`` (or ``title`` and ``description``), ``harmful`` (true/false), and
    optionally ``cluster``, ``category``, ``price``, ``seller``, ``language``.
    """
    items = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                title = row.get("title", row.get("text"))
                if not isinstance(row.get("id"), str) or not isinstance(title, str):
                    raise ValueError("needs a string 'id' and 'text' (or 'title')")
                if not isinstance(row.get("harmful"), bool):
                    raise ValueError("needs 'harmful': true or false")
                cluster = row.get("cluster")
                items.append(LabelledItem(
                    id=row["id"], title=title, description=row.get("description") or "",
                    category=row.get("category") or "", price=row.get("price"),
                    seller=row.get("seller") or "", language=row.get("language") or "und",
                    harmful=row["harmful"], cluster=None if cluster is None else str(cluster)))
            except (orjson.JSONDecodeError, ValueError) as error:
                raise ValueError(f"{path}:{n}: {error}") from error
    return items


def dedupe_texts(items: Iterable[LabelledItem]) -> list[LabelledItem]:
    """Keep the first item of each exact (case- and space-normalised) text."""
    seen: set[str] = set()
    kept = []
    for item in items:
        key = " ".join(item.text.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def marketplace_sample(items: Iterable[LabelledItem], harmful_rate: float = 0.12,
                       seed: int = 0) -> list[LabelledItem]:
    """All benign items plus a sample of harmful ones so they make ``harmful_rate`` overall.

    Harmful items with a cluster are sampled per cluster (at least two a cluster where it has
    two, so every kept seed keeps a sibling); those without one are sampled uniformly. A set
    with no benign items (Dream Market) is mixed into the synthetic benign pool.
    """
    items = list(items)
    benign = [i for i in items if not i.harmful]
    harmful = [i for i in items if i.harmful]
    if not benign:
        from qexplorer.marketplace.synthetic import generate_marketplace

        benign = generate_marketplace(n_benign=4 * len(harmful), n_clusters=0, seed=seed)
        benign = [LabelledItem(**{**b.to_dict(), "id": f"benign-{b.id}"}) for b in benign]
    wanted = round(harmful_rate * len(benign) / (1 - harmful_rate))
    if wanted >= len(harmful):
        return sorted(benign + harmful, key=lambda i: i.id)
    share = wanted / len(harmful)
    rng = random.Random(seed)
    clusters: dict[str | None, list[LabelledItem]] = defaultdict(list)
    for item in sorted(harmful, key=lambda i: i.id):
        clusters[item.cluster].append(item)
    kept = []
    for name in sorted(clusters, key=lambda c: (c is None, c or "")):
        members = clusters[name]
        count = round(share * len(members))
        if name is not None and len(members) >= 2:
            count = max(count, 2)
        kept += rng.sample(members, min(count, len(members)))
    return sorted(benign + kept, key=lambda i: i.id)
