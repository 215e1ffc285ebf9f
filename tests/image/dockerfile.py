"""A tiny reader of the Dockerfile's instructions, enough for the rule checks in the tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    result = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        result.append(Instruction(keyword.upper(), value.strip()))
    return result


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, in order."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", instruction.value, re.I)
            assert match, f"unreadable FROM: {instruction.value}"
            found.append(Stage(base=match.group(1), name=match.group(2)))
        elif not found:
            if instruction.keyword == "ARG":
                name, _, default = instruction.value.partition("=")
                global_args[name] = default
        else:
            found[-1].instructions.append(instruction)
    return global_args, found


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def label_values(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in stage.values("LABEL"):
        for token in shlex.split(value):
            key, _, label = token.partition("=")
            labels[key] = label
    return labels


def arg_defaults(stage: Stage) -> dict[str, str]:
    return dict(v.partition("=")[::2] for v in stage.values("ARG"))


def _pattern(glob: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, pattern) rules of a .dockerignore, in order (the last matching rule wins)."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((not negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a file (path relative to the context root) is sent to the builder."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exclude, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = not exclude
    return included
