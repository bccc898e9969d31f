"""The global symbols a C or assembly source of the gate defines, read from its text.

C: a small reader of file-scope declarations (no preprocessor: both sides of an
#if count, so it errs towards more symbols, never fewer for plain code).
Defined are functions with a body and objects without `extern`, unless
`static`; `#pragma weak a = b` defines `a`. A definition produced by a macro
of the file's own (`CMI_HDL_OPFUNC(vendor, uint_t)`) is not seen.

Assembly: the text after the C preprocessor (so `ENTRY(x)`, `ENTRY_NP(x)`,
`ALTENTRY(x)`, `DGDEF(x)` and macros built on them, such as the retpoline
thunks' `ENTRY(__x86_indirect_thunk_##reg)`, have become `.globl x`); every
`.globl`/`.global`/`.weak` name counts.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|\.\.\.|->|\S")
_PRAGMA_WEAK = re.compile(r"^\s*#\s*pragma\s+weak\s+([A-Za-z_]\w*)", re.M)
_ASM_GLOBAL = re.compile(r"\.(?:globl|global|weak)\s+([A-Za-z_.$][\w.$]*(?:\s*,\s*[A-Za-z_.$][\w.$]*)*)")
# Attribute-like words whose parenthesised argument is no declarator.
_ATTRIBUTES = {"__attribute__", "__attribute", "__sun_attr__", "__aligned", "__section",
               "__KPRINTFLIKE", "__KVPRINTFLIKE", "__PRINTFLIKE", "__VPRINTFLIKE",
               "__asm__", "__asm", "asm", "_NOTE", "__sym_compat"}
_NOT_NAMES = {"struct", "union", "enum", "const", "volatile", "unsigned", "signed", "int",
              "char", "short", "long", "void", "float", "double", "register", "inline",
              "__inline", "__inline__", "restrict", "__restrict", "_Bool", "__packed",
              "__NORETURN", "__GNU_INLINE", "__CONST", "__PURE", "__RETURNS_TWICE",
              "__unused", "_NORETURN_KYWD", "__thread"}


def asm_globals(preprocessed: str) -> set[str]:
    names: set[str] = set()
    for m in _ASM_GLOBAL.finditer(preprocessed):
        names.update(n.strip() for n in m.group(1).split(","))
    return names


def c_globals(source: str) -> set[str]:
    names = set(_PRAGMA_WEAK.findall(source))
    tokens = _tokens(_strip(source))
    decl: list[tuple[str, bool]] = []
    i = 0
    while i < len(tokens):
        tok, newline = tokens[i]
        if tok == ";":
            words = [t for t, _ in decl]
            knr = _knr_head(words)
            if knr:             # skip the parameters' declarations to the body
                while i < len(tokens) and tokens[i][0] != "{":
                    i += 1
                if "static" not in words:
                    names.add(knr)
                i = _skip_braces(tokens, i)
                decl = []
                continue
            names.update(_data_names(words))
            decl = []
        elif tok == "{":
            words = [t for t, _ in decl]
            if words and words[-1] == "=" or _is_tag_body(words):
                i = _skip_braces(tokens, i)     # an initializer or a struct's members
                decl.append(("{}", False))
                continue
            name = _function_name(words)
            if name and "static" not in words and "typedef" not in words:
                names.add(name)
            i = _skip_braces(tokens, i)
            decl = []
            continue
        elif newline and _macro_call(decl) and tok not in _CONTINUES:
            decl = [(tok, newline)]     # `MACRO(args)` alone on its lines: not a declaration
        else:
            decl.append((tok, newline))
        i += 1
    return names


_CONTINUES = {"{", ";", "=", ",", "[", "("} | _ATTRIBUTES


def _macro_call(decl: list[tuple[str, bool]]) -> bool:
    words = [t for t, _ in decl]
    return (len(words) >= 3 and words[0].isupper() and words[1] == "("
            and words[-1] == ")" and _close(words, 1) == len(words) - 1)


def _is_tag_body(words: list[str]) -> bool:
    """`struct name {` (members follow) rather than a function's body."""
    return bool(words) and (words[-1] in ("struct", "union", "enum") or
                            len(words) >= 2 and words[-2] in ("struct", "union", "enum"))


def _function_name(words: list[str]) -> str | None:
    """The name of the function whose body follows (ANSI or K&R head)."""
    words = _without_attributes(words)
    for k, w in enumerate(words):
        if w == "(" and k > 0 and _ident(words[k - 1]) and words[k - 1] not in _NOT_NAMES:
            return words[k - 1]
    return None


def _data_names(words: list[str]) -> set[str]:
    """Names of the objects a file-scope declaration defines: not a prototype,
    not static, not a typedef, not extern unless initialised."""
    words = _without_attributes(words)
    if not words or "static" in words or "typedef" in words \
            or "extern" in words and "=" not in words:
        return set()
    names: set[str] = set()
    for n, part in enumerate(_split_commas(words)):
        name = _declarator_name(part, first=n == 0)
        if name:
            names.add(name)
    return names


def _declarator_name(words: list[str], first: bool) -> str | None:
    stop = len(words)
    for k, w in enumerate(words):
        if w in ("=", "["):
            stop = k
            break
        if w == "(":
            if k + 1 < len(words) and words[k + 1] == "*":   # (*fp)(...): a pointer
                rest = [x for x in words[k + 2:] if _ident(x) and x not in _NOT_NAMES]
                return rest[0] if rest else None
            return None     # a function's prototype, or a macro's call
    head = [w for w in words[:stop] if w != "*"]
    if not head or not _ident(head[-1]) or head[-1] in _NOT_NAMES:
        return None
    if first and (len(head) < 2 or len(head) == 2 and head[0] in ("struct", "union", "enum")):
        return None         # no type before it, or `struct tag;`
    return head[-1]


def _knr_head(words: list[str]) -> str | None:
    """`type name(a, b) int a` (a K&R definition's head so far): the name."""
    words = _without_attributes(words)
    for k, w in enumerate(words):
        if w == "(" and k > 0 and _ident(words[k - 1]):
            end = _close(words, k)
            inner = words[k + 1:end]
            if inner and end + 1 < len(words) and _ident(words[end + 1]) and \
                    all(_ident(x) or x == "," for x in inner) and inner != ["void"]:
                return words[k - 1]
            return None
    return None


def _split_commas(words: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    depth = 0
    for w in words:
        if w in ("(", "["):
            depth += 1
        elif w in (")", "]"):
            depth -= 1
        if w == "," and depth == 0:
            parts.append([])
            continue
        parts[-1].append(w)
    return parts


def _without_attributes(words: list[str]) -> list[str]:
    out: list[str] = []
    k = 0
    while k < len(words):
        if words[k] in _ATTRIBUTES and k + 1 < len(words) and words[k + 1] == "(":
            k = _close(words, k + 1) + 1
            continue
        out.append(words[k])
        k += 1
    return out


def _close(words: list[str], open_at: int) -> int:
    depth = 0
    for k in range(open_at, len(words)):
        if words[k] == "(":
            depth += 1
        elif words[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return len(words) - 1


def _skip_braces(tokens: list[tuple[str, bool]], at: int) -> int:
    depth = 0
    for k in range(at, len(tokens)):
        if tokens[k][0] == "{":
            depth += 1
        elif tokens[k][0] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(tokens)


def _ident(word: str) -> bool:
    return word[0].isalpha() or word[0] == "_"


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Tokens with whether each is the first of its line."""
    out: list[tuple[str, bool]] = []
    for line in text.split("\n"):
        first = True
        for tok in _TOKEN.findall(line):
            out.append((tok, first))
            first = False
    return out


_LEXICAL = re.compile(r"/\*.*?\*/|//[^\n]*"                      # comments
                      r'|"(?:\\.|[^"\\\n])*"'                  # strings
                      r"|'(?:\\.|[^'\\\n])*'"                  # characters
                      r"|^[ \t]*#(?:\\\n|[^\n])*", re.S | re.M)   # directives


def _strip(source: str) -> str:
    """The source without comments, string and character literals, and
    preprocessor lines (newlines kept, so tokens keep their lines)."""
    def blank(m: re.Match[str]) -> str:
        text = m.group(0)
        if text[0] == '"':
            return '""'
        if text[0] == "'":
            return "0"
        return "\n" * text.count("\n") or " "
    return _LEXICAL.sub(blank, source)
