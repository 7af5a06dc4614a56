"""Label maps: class name <-> id ``1..K``, in TF OD API pbtxt or JSON.

The pbtxt dialect is the TF Object Detection API's ``StringIntLabelMap``::

    item {
      id: 1
      name: 'raccoon'
      display_name: 'Raccoon'   # optional
    }

JSON label maps may be ``{"1": "raccoon", ...}``, ``[{"id": 1, "name":
"raccoon"}, ...]`` or a plain list of names (ids 1..K in list order).
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Optional

_TOKEN = re.compile(r"""\s*(?:(#[^\n]*)|([{}:])|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([^\s{}:#"']+))""")


class LabelMapError(ValueError):
    """A label map that cannot be read or is inconsistent."""


class LabelMap:
    """An ordered mapping between class names and ids.

    Ids are positive and unique; names are unique. ``from_names`` builds the
    contiguous ``1..K`` map every default conversion uses.
    """

    def __init__(self, items: Iterable[tuple[int, str]], display_names: Optional[dict[int, str]] = None):
        self._items = sorted((int(item_id), str(name)) for item_id, name in items)
        self.display_names = dict(display_names or {})
        ids = [item_id for item_id, _ in self._items]
        names = [name for _, name in self._items]
        if any(item_id < 1 for item_id in ids):
            raise LabelMapError("label map ids start at 1 (id 0 is reserved for the background)")
        if len(set(ids)) != len(ids):
            raise LabelMapError(f"label map repeats an id: {sorted(i for i in ids if ids.count(i) > 1)[0]}")
        if len(set(names)) != len(names):
            raise LabelMapError(f"label map repeats a name: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
        self._id_by_name = {name: item_id for item_id, name in self._items}
        self._name_by_id = dict(self._items)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "LabelMap":
        """Ids ``1..K`` in the order of ``names``."""
        return cls((index + 1, name) for index, name in enumerate(names))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._id_by_name

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelMap) and self._items == other._items

    def __repr__(self) -> str:
        return f"LabelMap({self._items!r})"

    def id_of(self, name: str) -> Optional[int]:
        """The id of a class name, ``None`` when the map does not have it."""
        return self._id_by_name.get(name)

    def name_of(self, item_id: int) -> Optional[str]:
        """The name of an id, ``None`` when the map does not have it."""
        return self._name_by_id.get(int(item_id))

    @property
    def items(self) -> list[tuple[int, str]]:
        """``(id, name)`` pairs sorted by id."""
        return list(self._items)

    @property
    def names(self) -> list[str]:
        """Names sorted by id."""
        return [name for _, name in self._items]

    def to_pbtxt(self) -> str:
        lines = []
        for item_id, name in self._items:
            lines += ["item {", f"  id: {item_id}", f"  name: {_quote(name)}"]
            if item_id in self.display_names:
                lines.append(f"  display_name: {_quote(self.display_names[item_id])}")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def save(self, path: str) -> None:
        """Writes the pbtxt atomically (temporary name, then rename)."""
        temporary = f"{path}.tmp-{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(self.to_pbtxt())
        os.replace(temporary, path)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda match: {"n": "\n", "t": "\t"}.get(match.group(1), match.group(1)), body)


def parse_pbtxt(text: str, source: str = "<label map>") -> LabelMap:
    """Parses a TF OD API ``StringIntLabelMap`` text proto.

    Fields other than ``id``, ``name`` and ``display_name`` (keypoints,
    frequency, ...) are read past, including nested blocks.
    """
    tokens = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position and text[position:match.start()].strip():
            raise LabelMapError(f"{source}: cannot read {text[position:match.start()].strip()[:20]!r}")
        position = match.end()
        comment, punctuation, quoted, word = match.groups()
        if comment is None:
            tokens.append(punctuation or quoted or word)
    if text[position:].strip():
        raise LabelMapError(f"{source}: cannot read {text[position:].strip()[:20]!r}")

    items, display_names = [], {}
    index = 0

    def expect(token):
        nonlocal index
        if index >= len(tokens) or tokens[index] != token:
            found = tokens[index] if index < len(tokens) else "end of file"
            raise LabelMapError(f"{source}: expected {token!r}, found {found!r}")
        index += 1

    while index < len(tokens):
        if tokens[index] != "item":
            raise LabelMapError(f"{source}: expected 'item', found {tokens[index]!r}")
        index += 1
        if index < len(tokens) and tokens[index] == ":":
            index += 1
        expect("{")
        fields, depth = {}, 0
        while True:
            if index >= len(tokens):
                raise LabelMapError(f"{source}: unclosed item block")
            token = tokens[index]
            index += 1
            if token == "}":
                if depth == 0:
                    break
                depth -= 1
                continue
            if token == "{":
                depth += 1
                continue
            if index < len(tokens) and tokens[index] == ":":
                index += 1
            if index < len(tokens) and tokens[index] == "{":
                continue  # a nested message; its fields are read past
            if index >= len(tokens):
                raise LabelMapError(f"{source}: field {token!r} has no value")
            value = tokens[index]
            index += 1
            if depth == 0:
                fields[token] = _unquote(value) if value[:1] in "'\"" else value
        if "id" not in fields or "name" not in fields and "display_name" not in fields:
            raise LabelMapError(f"{source}: every item needs an id and a name")
        try:
            item_id = int(fields["id"])
        except ValueError:
            raise LabelMapError(f"{source}: id {fields['id']!r} is not an integer") from None
        items.append((item_id, fields.get("name", fields.get("display_name"))))
        if "display_name" in fields:
            display_names[item_id] = fields["display_name"]
    if not items:
        raise LabelMapError(f"{source}: label map has no items")
    return LabelMap(items, display_names)


def parse_json(text: str, source: str = "<label map>") -> LabelMap:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabelMapError(f"{source}: not valid JSON ({error})") from None
    try:
        if isinstance(data, dict):
            return LabelMap((int(key), str(value)) for key, value in data.items())
        if data and all(isinstance(entry, dict) for entry in data):
            return LabelMap((int(entry["id"]), str(entry["name"])) for entry in data)
        if data and all(isinstance(entry, str) for entry in data):
            return LabelMap.from_names(data)
    except (KeyError, TypeError, ValueError) as error:
        raise LabelMapError(f"{source}: {error}") from None
    raise LabelMapError(f"{source}: expected an id->name object, a list of {{id, name}} or a list of names")


def load(path: str) -> LabelMap:
    """Reads a ``.pbtxt`` or ``.json`` label map."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise LabelMapError(f"{path}: cannot read label map ({error.strerror})") from None
    if path.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        return parse_json(text, path)
    return parse_pbtxt(text, path)
