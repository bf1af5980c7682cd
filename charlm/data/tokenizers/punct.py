"""The punct pre-tokenizer: its regex, which splits punctuation off words, and its inverse for decoding."""

from __future__ import annotations

import re

# punct: words (with an inner apostrophe: don't, l'homme) or single punctuation marks;
# the special tokens come first so that "<unk>" stays one token
PUNCT_RE = re.compile(r"<unk>|<eos>|\w+(?:'\w+)?|[^\w\s]")


# punct decoding: marks written against the word before them, or the word after them
_CLOSE = frozenset(",.;:!?)]}%\u2026\u201d")  # ... and the closing curly double quote
_OPEN = frozenset("([{\u201c\u2018")
_CONTRACTION = frozenset(("s", "t", "d", "m", "ll", "re", "ve"))  # after a curly apostrophe: don\u2019t, it\u2019s


def _wordish(token: str | None) -> bool:
    return bool(token) and (token[-1].isalnum() or token[-1] == "_")  # type: ignore[index]


def detokenize(words: list[str]) -> str:
    """The punct pre-tokenizer's tokens ("\\n" for a line end) as text.

    No space before , . ; : ! ? % and closing brackets, none after opening ones;
    straight double quotes pair up (opening, then closing) within a paragraph; a
    straight single quote closes an open one or a plural possessive (the dogs'
    bowls) and opens elsewhere; hyphens join words (well-known, and--dashes); 1,000
    and 3.5 stay numbers; a curly apostrophe joins a contraction (don\u2019t).

    Re-encoding the text gives the same tokens: two word tokens are never joined, and a straight
    apostrophe (which the pre-tokenizer reads inside a word, as in don't) never touches words on both
    sides. Each token's spacing depends only on the tokens before it, so decoding a prefix of the ids
    gives a prefix of the text, which streaming generation relies on.
    """
    out: list[str] = []
    prev: str | None = None  # the tokens before this one on its line
    prev2: str | None = None
    glue_next = False  # the previous token holds on to this one (an opening quote, a joining hyphen)
    double_open = single_open = False
    for w in words:
        if w == "\n":
            out.append("\n")
            if prev is None:  # an empty line: a new paragraph, where quotes start afresh
                double_open = single_open = False
            prev = prev2 = None
            glue_next = False
            continue
        glue = prev is None or glue_next or w in _CLOSE or prev in _OPEN
        glue_next = False
        if w == '"':
            glue |= double_open  # a closing quote sits on what it closes ...
            glue_next = not double_open  # ... an opening one on what it opens
            double_open = not double_open
        elif w == "'":
            if (_wordish(prev) and (single_open or str(prev).endswith("s"))) or (single_open and prev in _CLOSE):
                glue, single_open = True, False
            else:
                glue_next, single_open = True, True
        elif w == "\u2019":
            glue = glue or _wordish(prev)
        elif w == "-":
            glue = glue or _wordish(prev) or prev == "-"
            glue_next = glue and prev is not None
        elif w.isdigit() and prev in (",", ".") and prev2 is not None and prev2.isdigit():
            glue = glue or prev == "." or len(w) == 3  # 3.5, 1,000 (not "in 1812, 5 men")
        elif prev == "\u2019" and w in _CONTRACTION and _wordish(prev2):
            glue = True
        if out and not glue:
            out.append(" ")
        out.append(w)
        prev2, prev = prev, w
    return "".join(out)
