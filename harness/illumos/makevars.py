"""Reading variables out of illumos-gate's Makefiles (dmake syntax), without make.

Only what the uts build uses to say how a module is compiled and which objects
make unix and genunix:

- `NAME = value`, `NAME += value` (values stay unexpanded until asked for, as
  make's recursive variables), continuation lines, `#` comments (`\\#` is a '#');
- `include FILE`, followed through `load` (a file it cannot give is skipped);
- a line starting with a reference such as `$(RELEASE_BUILD)NAME = value`: the
  reference is expanded and the line is a comment when that gives '#' (the
  gate's way of switching lines on and off);
- references `$(NAME)`, `${NAME}`, nested names `$(CLASS_$(BUILD_TYPE))`,
  substitutions `$(NAME:.o=.c)` and `$(NAME:%=dir/%)`, and `$$`;
- pattern rules `$(OBJS_DIR)/PREFIX%.o: DIR/%.c`, recorded in order as
  (PREFIX, DIR, ext).

`overrides` are the environment of `make -e` (nightly's way): assignments in the
Makefiles never change them. Target-conditional assignments (`target := NAME
+= value`), `:sh=` assignments, rules' recipes and other targets are ignored:
they never concern the variables read here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*(\+?=)\s*(.*)$", re.S)
_PATTERN_RULE = re.compile(r"^\$\(OBJS_DIR\)/(\w*)%\.o\s*:\s*(\S+)/%\.([A-Za-z]+)\s*$")
_INCLUDE = re.compile(r"^include\s+(\S+)\s*$")
_MAX_DEPTH = 40


class MakeVars:
    def __init__(self, overrides: dict[str, str] | None = None,
                 load: Callable[[str], str | None] = lambda _path: None) -> None:
        self.values: dict[str, str] = {}
        self.overrides = dict(overrides or {})
        self.pattern_rules: list[tuple[str, str, str]] = []   # (object prefix, dir, ext)
        self.skipped_includes: list[str] = []
        self._load = load

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def read(self, text: str) -> None:
        """Take in one Makefile's text (and the files it includes)."""
        for line in _logical_lines(text):
            self._line(line)

    def _line(self, line: str) -> None:
        if line.startswith("\t") or not line.strip():
            return      # a recipe, or nothing
        line = line.strip()
        rule = _PATTERN_RULE.match(line)
        if rule:
            prefix, directory, ext = rule.groups()
            self.pattern_rules.append((prefix, self.expand(directory), ext))
            return
        while line.startswith("$(") or line.startswith("${"):
            end = _closing(line, 1)
            head = self.expand(line[:end + 1])
            if head.startswith("#"):
                return
            line = (head + line[end + 1:]).strip()
        include = _INCLUDE.match(line)
        if include:
            path = self.expand(include.group(1))
            text = self._load(path)
            if text is None:
                self.skipped_includes.append(path)
            else:
                self.read(text)
            return
        assign = _ASSIGN.match(line)
        if not assign:
            return      # a target, a conditional assignment, :sh=, a directive
        name, op, value = assign.groups()
        if name in self.overrides:
            return
        if op == "+=" and self.values.get(name):
            self.values[name] = f"{self.values[name]} {value}"
        else:
            self.values[name] = value

    def get(self, name: str) -> str:
        """The variable fully expanded ('' when never set)."""
        return self.expand(f"$({name})")

    def words(self, name: str) -> list[str]:
        return self.get(name).split()

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > _MAX_DEPTH:
            raise ValueError(f"variables refer to themselves: {text[:80]}")
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c != "$" or i + 1 >= len(text):
                out.append(c)
                i += 1
                continue
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt in "({":
                end = _closing(text, i + 1)
                out.append(self._reference(text[i + 2:end], depth))
                i = end + 1
            else:       # $X: a one-letter variable
                out.append(self._value(nxt, depth))
                i += 2
        return "".join(out)

    def _reference(self, inner: str, depth: int) -> str:
        inner = self.expand(inner, depth + 1)
        name, colon, subst = inner.partition(":")
        value = self._value(name, depth)
        if not colon or "=" not in subst:
            return value
        old, new = subst.split("=", 1)
        return " ".join(_substitute(w, old, new) for w in value.split())

    def _value(self, name: str, depth: int) -> str:
        raw = self.overrides[name] if name in self.overrides else self.values.get(name, "")
        return self.expand(raw, depth + 1)


def _substitute(word: str, old: str, new: str) -> str:
    """One word of `$(NAME:old=new)`: a % pattern, or a suffix."""
    if "%" in old:
        prefix, suffix = old.split("%", 1)
        if word.startswith(prefix) and word.endswith(suffix) \
                and len(word) >= len(prefix) + len(suffix):
            stem = word[len(prefix):len(word) - len(suffix)]
            return new.replace("%", stem, 1) if "%" in new else new
        return word
    return word[:-len(old)] + new if old and word.endswith(old) else word


def _closing(text: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at` (nesting counted)."""
    opening = text[open_at]
    closing = ")" if opening == "(" else "}"
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {opening} in {text[:80]!r}")


def _logical_lines(text: str) -> list[str]:
    """Lines with continuations joined and comments removed."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _strip_comment(line: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "#":
            out.append("#")
            i += 2
            continue
        if line[i] == "#":
            break
        out.append(line[i])
        i += 1
    return "".join(out).rstrip() if len(out) < len(line) else "".join(out)
