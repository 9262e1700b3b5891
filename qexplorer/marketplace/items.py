"""The labelled item every marketplace source produces, and its conversion to a listing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The listing contract's bounds (schemas.models): a labelled item is cut to fit them.
MAX_TITLE = 1_000
MAX_DESCRIPTION = 20_000
MAX_SHORT = 200


@dataclass(frozen=True)
class LabelledItem:
    """A listing with its ground truth: is it harmful, and which cluster (campaign) is it in."""

    id: str
    title: str
    description: str = ""
    category: str = ""
    price: float | None = None
    seller: str = ""
    language: str = "und"
    harmful: bool = False
    cluster: str | None = None

    @property
    def text(self) -> str:
        """Title and description as one text (what a query is extracted from)."""
        return f"{self.title}\n{self.description}" if self.description else self.title

    def to_dict(self) -> dict:
        """All fields, labels included (the generator's JSONL rows)."""
        return asdict(self)


def to_listing_dict(item: LabelledItem) -> dict:
    """The fields of a ``listings`` upsert for this item, labels dropped, texts cut to bounds."""
    return {
        "id": item.id,
        "title": item.title[:MAX_TITLE],
        "description": item.description[:MAX_DESCRIPTION],
        "category": item.category[:MAX_SHORT],
        "price": item.price,
        "seller": item.seller[:MAX_SHORT],
        "language": item.language[:16],
    }


def to_toxic_dict(item: LabelledItem, confirmed_by: str) -> dict:
    """The fields of a ``toxic-items`` record confirming this item, texts cut to bounds."""
    listing = to_listing_dict(item)
    return {"id": listing["id"], "title": listing["title"],
            "description": listing["description"], "category": listing["category"],
            "cluster": None if item.cluster is None else item.cluster[:MAX_SHORT],
            "confirmed_by": confirmed_by[:MAX_SHORT], "language": listing["language"]}
