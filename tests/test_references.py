"""Every reference the code and the documents make resolves inside the repository.

Read: every ``.py`` file of the repository's folders (the packages, ``tests/``, ``scripts/``, ``notebooks/``),
every ``.sh`` and ``.toml`` file, and every ``.md`` file except ``CHANGELOG.md``, whose entries record what
existed when they were written (removed names and the project's issue numbers included). What is found is
judged against the tree as it is when the test runs: nothing here lists today's modules or Notes.

- **Notes.** A Note is *defined* once: a docstring paragraph (of a module, class or function) that begins
  ``Note [<name>]:``. Every other ``Note [<name>]`` — in a comment, another docstring, a message, a
  document — *cites* it, and must name a Note defined somewhere; a citation that says where
  (``Note [<name>] in :mod:`oblique.geometry```) must name the module that defines it.
- **Documents.** A named document (``DESIGN.md``, ``ARCHITECTURE.md``, ``README``) is a file of the
  repository (the design documents live in ``docs/``); a cited section (``docs/DESIGN.md, "One
  interface"``, a link's ``#anchor``) is one of its headings.
- **Paths.** A path under one of the repository's top-level folders (``oblique/records.py``,
  ``scripts/gpu_check.sh``, ``notebooks/*.py``) exists, as does the target of a document's relative link.
  In ``.py`` files only docstrings and comments are read for paths (code builds paths of its own).
- **Names.** A dotted name in one of the project's packages (``oblique.fit.fit``), the names a
  ``from oblique... import ...`` line of a docstring or document takes, and a Sphinx role's target
  (``:func:`oblique.geometry.drift```; a bare name is looked up in the class, then the module the
  docstring belongs to) resolve by import and ``getattr``. Targets in other libraries are not checked.
- **Issue numbers.** The project's issues are not in the repository: code and documents say what and why
  instead of citing one. An upstream library's issue (``geoopt issue 226``: the word before names an
  installed package) is a citation of that library and stays.

Each check collects every problem of the tree and reports them together, ``path:line: what``. The checks
are tested on made-up sources too (:func:`test_each_check_finds_a_broken_reference`), so none of them
passes by reading nothing. One document holds data the code holds too, and the last test keeps them equal:
the poster's numbers (``docs/reference/norm_loss_poster.md`` and ``oblique.study.published``).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.util
import inspect
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the one document whose old sections may name what no longer exists (see the module docstring)
HISTORY = ("CHANGELOG.md",)


@dataclass
class Chunk:
    """One piece of prose or code of a source: a docstring, a run of comments, a string, a paragraph."""

    kind: str  # "docstring", "comment", "string" (.py); "text", "code" (.md); "config" (.sh, .toml)
    line: int  # the line it starts on
    text: str
    scope: tuple[str, ...] = ()  # a docstring's enclosing classes and functions, outermost first

    def flat(self) -> str:
        """The text with every run of whitespace one space (a reference may wrap across lines)."""
        return " ".join(self.text.split())

    def line_of(self, flat_index: int) -> int:
        """The line of the character at ``flat_index`` of :meth:`Chunk.flat`."""
        words = self.flat()[:flat_index].count(" ")
        pos, seen = 0, 0
        for m in re.finditer(r"\S+", self.text):
            if seen == words:
                pos = m.start()
                break
            seen += 1
        return self.line + self.text[:pos].count("\n")


@dataclass
class Source:
    """A file of the repository, cut into chunks; ``module`` is its dotted name when it is importable."""

    path: Path
    chunks: list[Chunk]
    module: str | None = None
    headings: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # a non-package .py file: name -> what it imports

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def where(self, chunk: Chunk, flat_index: int = 0) -> str:
        return f"{self.rel}:{chunk.line_of(flat_index)}"


# ------------------------------------------------------------------------------------------ the tree


@cache
def _ignored() -> tuple[str, ...]:
    """The ``.gitignore`` patterns (folder patterns without their slash), plus Python's caches."""
    path = ROOT / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    pats = [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]
    return (*pats, "__pycache__", ".*")


def _is_ignored(path: Path) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in path.relative_to(ROOT).parts for pat in _ignored())


@cache
def top_folders() -> tuple[str, ...]:
    """The repository's top-level folders: every folder of the root that git would not ignore."""
    return tuple(sorted(d.name for d in ROOT.iterdir() if d.is_dir() and not _is_ignored(d)))


@cache
def packages() -> tuple[str, ...]:
    """The project's import packages: the top-level folders with an ``__init__.py``."""
    return tuple(name for name in top_folders() if (ROOT / name / "__init__.py").exists())


def _files() -> list[Path]:
    found = [p for p in ROOT.glob("*") if p.is_file() and p.suffix in (".md", ".toml")]
    for folder in top_folders():
        for suffix in (".py", ".md", ".sh", ".toml"):
            found += (ROOT / folder).rglob(f"*{suffix}")
    return sorted(p for p in set(found) if not _is_ignored(p) and p.name not in HISTORY)


@cache
def sources() -> tuple[Source, ...]:
    return tuple(parse(path, path.read_text(encoding="utf-8")) for path in _files())


def parse(path: Path, text: str) -> Source:
    """``text`` (the contents of ``path``) cut into chunks by the kind of file."""
    if path.suffix == ".py":
        return _parse_python(path, text)
    if path.suffix == ".md":
        return _parse_markdown(path, text)
    uncommented = "\n".join(re.sub(r"^\s*#+ ?", "", line) for line in text.splitlines())  # a comment may wrap
    return Source(path, [Chunk("config", 1, uncommented)])


def _module_name(path: Path) -> str | None:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] not in packages():
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_SCOPES = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(node: ast.AST, scope: tuple[str, ...] = ()) -> list[Chunk]:
    """Every docstring in ``node``, each with the names of the classes and functions around it."""
    found = []
    doc = ast.get_docstring(node, clean=False) if isinstance(node, (ast.Module, *_SCOPES)) else None
    if doc is not None:
        found.append(Chunk("docstring", node.body[0].lineno, doc, scope))
    for child in ast.iter_child_nodes(node):
        found += _docstrings(child, (*scope, child.name) if isinstance(child, _SCOPES) else scope)
    return found


def _parse_python(path: Path, text: str) -> Source:
    tree = ast.parse(text)
    chunks = _docstrings(tree)
    doc_lines = {c.line for c in chunks}
    comments: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments.append((tok.start[0], tok.string.lstrip("#:").strip()))
        elif tok.type == tokenize.STRING and tok.start[0] not in doc_lines:
            chunks.append(Chunk("string", tok.start[0], tok.string))
    for line, body in comments:  # comments on consecutive lines are one chunk
        last = chunks[-1] if chunks and chunks[-1].kind == "comment" else None
        if last is not None and last.line + last.text.count("\n") == line - 1:
            last.text += "\n" + body
        else:
            chunks.append(Chunk("comment", line, body))
    module = _module_name(path)
    return Source(path, chunks, module, names={} if module else _imported_names(tree))


def _imported_names(tree: ast.AST) -> dict[str, str]:
    """A script's or test's namespace without running it: name -> the dotted name it stands for (its own
    definitions stand for themselves, ``""``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(
                {
                    (a.asname or a.name.split(".")[0]): (a.name if a.asname else a.name.split(".")[0])
                    for a in node.names
                }
            )
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names})
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.setdefault(node.name, "")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, "")
    return names


def _parse_markdown(path: Path, text: str) -> Source:
    """Paragraphs of text and fenced code blocks as chunks; the headings outside code blocks."""
    chunks: list[Chunk] = []
    headings: list[str] = []
    fence, current = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence, current = not fence, None
            continue
        if not fence and not line.strip():
            current = None
            continue
        if not fence and re.match(r"#{1,6} ", line):
            headings.append(line.lstrip("#").strip())
        if current is None:
            current = Chunk("code" if fence else "text", number, "")
            chunks.append(current)
        current.text += line + "\n"
    return Source(path, chunks, headings=headings)


# ------------------------------------------------------------------------------------------ Notes

NOTE = re.compile(r"Note \[([^\]\[<>{}]+)\]")
NOTE_DEF = re.compile(r"Note \[([^\]\[<>{}]+)\]:")
NOTE_IN = re.compile(r"Note \[([^\]\[<>{}]+)\] in (?::mod:)?``?~?([\w./]+?)``?(?![\w./])")


def note_definitions(srcs) -> dict[str, list[str]]:
    """name -> where it is defined (``path:line``): a docstring paragraph that begins ``Note [<name>]:``."""
    found: dict[str, list[str]] = {}
    for src in srcs:
        for chunk in src.chunks:
            if chunk.kind != "docstring":
                continue
            lines = chunk.text.splitlines()
            for i, line in enumerate(lines):
                m = NOTE_DEF.match(line.strip())
                if m and (i == 0 or not lines[i - 1].strip()):
                    found.setdefault(m.group(1), []).append(f"{src.rel}:{chunk.line + i}")
    return found


def _module_file(name: str) -> str | None:
    """The repository file of a module named by dots or by path; None if there is none."""
    if "/" in name:
        return name if (ROOT / name).exists() else None
    for cand in (name.replace(".", "/") + ".py", name.replace(".", "/") + "/__init__.py"):
        if (ROOT / cand).exists():
            return cand
    return None


def note_problems(srcs) -> list[str]:
    defs = note_definitions(srcs)
    problems = [
        f"{again}: Note [{n}] is defined again (first at {where[0]})"
        for n, where in defs.items()
        for again in where[1:]
    ]
    for src in srcs:
        for chunk in src.chunks:
            flat = chunk.flat()
            for m in NOTE.finditer(flat):
                if m.group(1) not in defs:
                    problems.append(f"{src.where(chunk, m.start())}: Note [{m.group(1)}] is defined nowhere")
            for m in NOTE_IN.finditer(flat):
                name, module = m.groups()
                home = [w.rsplit(":", 1)[0] for w in defs.get(name, [])]
                if home and _module_file(module) not in home:
                    problems.append(
                        f"{src.where(chunk, m.start())}: Note [{name}] is in {home[0]}, not {module}"
                    )
    return problems


# ------------------------------------------------------------------------------------------ documents

DOC = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Z][A-Z_]*\.md)")
SECTION = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Z][A-Z_]*(?:\.md)?),? (?:section )?[\"“]([^\"”]+)[\"”]")
LINK = re.compile(r"\]\(([^)\s]+)\)|(?:src|href)=\"([^\"]+)\"")


def _doc_file(name: str, near: Path) -> Path | None:
    """A document named in ``near``: by its path, beside ``near``, at the root, or in ``docs/``."""
    name = name if name.endswith(".md") else name + ".md"
    for cand in (ROOT / name, near.parent / name, ROOT / "docs" / name):
        if cand.is_file():
            return cand
    return None


@cache
def _headings(path: Path) -> list[str]:
    return _parse_markdown(path, path.read_text(encoding="utf-8")).headings


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def document_problems(srcs) -> list[str]:
    problems = []
    for src in srcs:
        for chunk in src.chunks:
            flat = chunk.flat()
            for m in DOC.finditer(flat):
                if _doc_file(m.group(1), src.path) is None:
                    problems.append(
                        f"{src.where(chunk, m.start())}: no document {m.group(1)} in the repository"
                    )
            for m in SECTION.finditer(flat):
                doc = _doc_file(m.group(1), src.path)
                if doc is not None and m.group(2) not in _headings(doc):
                    rel = doc.relative_to(ROOT).as_posix()
                    problems.append(f"{src.where(chunk, m.start())}: {rel} has no section {m.group(2)!r}")
            if src.path.suffix == ".md":
                problems += [f"{src.where(chunk, m.start())}: {p}" for m, p in _link_problems(src.path, flat)]
    return problems


def _link_problems(path: Path, flat: str):
    for m in LINK.finditer(flat):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            yield m, f"the link {target} leads to nothing"
        elif anchor and dest.suffix == ".md" and anchor not in map(_slug, _headings(dest)):
            yield m, f"the link {target}: {dest.name} has no heading with anchor #{anchor}"


# ------------------------------------------------------------------------------------------ paths


def _path_pattern() -> re.Pattern:
    roots = "|".join(map(re.escape, top_folders()))
    return re.compile(rf"(?<![\w./~$-])((?:{roots})/[\w./*…<>{{}}-]*)")


def _path_exists(cited: str) -> bool:
    cut = re.split(r"[<{…]|\.\.\.", cited)[0]
    if cut != cited:  # a pattern written out (notebooks/<name>.py, docs/figures/…): its folder exists
        return (ROOT / cut).exists() or (ROOT / cut).parent.is_dir()
    cited = cited.rstrip(".")
    if "*" in cited:
        return any(ROOT.glob(cited))
    return (ROOT / cited).exists()


@cache
def _python_file_names() -> frozenset[str]:
    return frozenset(p.name for folder in top_folders() for p in (ROOT / folder).rglob("*.py"))


def path_problems(srcs) -> list[str]:
    """Rooted paths everywhere but in code's strings; and in a document's code block (a layout drawn as a
    tree: ``  records.py  the run folder``), every bare ``name.py`` is a file somewhere in the repository."""
    pattern = _path_pattern()
    problems = []
    for src in srcs:
        for chunk in src.chunks:
            if chunk.kind == "string":
                continue
            for m in pattern.finditer(chunk.flat()):
                if not _path_exists(m.group(1)):
                    problems.append(f"{src.where(chunk, m.start())}: no file or folder {m.group(1)}")
            if chunk.kind == "code":
                for m in re.finditer(r"(?<![\w./*<-])(\w+\.py)\b", chunk.flat()):
                    if m.group(1) not in _python_file_names():
                        problems.append(
                            f"{src.where(chunk, m.start())}: no file {m.group(1)} in the repository"
                        )
    return problems


# ------------------------------------------------------------------------------------------ names

ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`~?\.?([\w.]+)`")
IMPORT = re.compile(r"from ([\w.]+) import (\w+(?: as \w+)?(?:, \w+(?: as \w+)?)*)")


def _dotted_pattern() -> re.Pattern:
    pkgs = "|".join(map(re.escape, packages()))
    return re.compile(rf"(?<![\w.])((?:{pkgs})(?:\.[A-Za-z_]\w*)+)(?![\w/])")  # not a schema: oblique.bench/2


def _instance_attributes(cls: type) -> set[str]:
    """Names a class's methods assign to ``self`` (instance attributes have no class attribute)."""
    names = set()
    for klass in inspect.getmro(cls):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                names.add(node.attr)
    return names


def _attribute(obj, name: str):
    """``obj.name``: a module's submodule before a name it exports (``oblique.cost.bench`` is the module,
    not the function of that name), and also a class's dataclass field, annotation or instance attribute;
    raises AttributeError."""
    if inspect.ismodule(obj) and hasattr(obj, "__path__"):
        if importlib.util.find_spec(f"{obj.__name__}.{name}") is not None:
            return importlib.import_module(f"{obj.__name__}.{name}")
    if hasattr(obj, name):
        return getattr(obj, name)
    if inspect.isclass(obj):
        declared = set(getattr(obj, "__dataclass_fields__", {}))
        for klass in inspect.getmro(obj):
            declared |= set(getattr(klass, "__annotations__", {}))
        if name in declared or name in _instance_attributes(obj):
            return None
    raise AttributeError(name)


def resolve(dotted: str, start=None) -> bool:
    """Whether ``dotted`` names something: from ``start`` (an object), else from its first module."""
    parts = dotted.split(".")
    try:
        obj = start if start is not None else importlib.import_module(parts[0])
        for part in parts if start is not None else parts[1:]:
            obj = _attribute(obj, part)
    except (ImportError, AttributeError):
        return False
    return True


def _foreign(dotted: str) -> bool:
    """Whether ``dotted`` starts with an installed package that is not the project's."""
    first = dotted.split(".")[0]
    if first in packages():
        return False
    try:
        return importlib.util.find_spec(first) is not None
    except (ImportError, ValueError):
        return False


def _resolve_role(target: str, src: Source, chunk: Chunk) -> bool:
    if target.split(".")[0] in packages():
        return resolve(target)
    if _foreign(target):
        return True
    if src.module is None:  # a test or a script: its imports and its own definitions
        first, _, rest = target.partition(".")
        if first not in src.names:
            return False
        return (
            not src.names[first]
            or not rest
            or _foreign(src.names[first])
            or resolve(f"{src.names[first]}.{rest}")
        )
    try:
        module = importlib.import_module(src.module)
    except ImportError:
        return False
    scopes = [module]
    for name in chunk.scope:  # the class (or function) the docstring is in, innermost first
        scopes.insert(0, getattr(scopes[0], name, None))
    return any(
        resolve(target, scope) for scope in scopes if scope is not None and not inspect.isfunction(scope)
    )


def name_problems(srcs) -> list[str]:
    dotted = _dotted_pattern()
    problems = []
    for src in srcs:
        for chunk in src.chunks:
            if chunk.kind == "string":
                continue
            flat = chunk.flat()
            for m in dotted.finditer(flat):
                if not resolve(m.group(1)):
                    problems.append(f"{src.where(chunk, m.start())}: {m.group(1)} names nothing")
            for m in IMPORT.finditer(flat):
                if m.group(1).split(".")[0] not in packages():
                    continue
                for name in (n.split(" as ")[0].strip() for n in m.group(2).split(",")):
                    if name and not resolve(f"{m.group(1)}.{name}"):
                        problems.append(f"{src.where(chunk, m.start())}: {m.group(1)} has no {name}")
            for m in ROLE.finditer(flat):
                if not _resolve_role(m.group(1), src, chunk):
                    problems.append(f"{src.where(chunk, m.start())}: {m.group(0)} names nothing")
    return problems


# ------------------------------------------------------------------------------------------ issues

ISSUE = re.compile(r"(?:([\w.-]+)[`'’)]* )?\b[Ii]ssues? #?\d+")


def issue_problems(srcs) -> list[str]:
    problems = []
    for src in srcs:
        for chunk in src.chunks:
            for m in ISSUE.finditer(chunk.flat()):
                if m.group(1) is None or not _foreign(m.group(1)):
                    problems.append(
                        f"{src.where(chunk, m.start())}: {m.group(0)!r} cites an issue of the project"
                    )
    return problems


# ------------------------------------------------------------------------------------------ the tests

CHECKS = {
    "notes": note_problems,
    "documents": document_problems,
    "paths": path_problems,
    "names": name_problems,
    "issues": issue_problems,
}


def test_the_tree_is_read():
    """The sources are found: the packages, the tests and the documents, each cut into chunks."""
    rels = {src.rel for src in sources()}
    assert {"README.md", "docs/DESIGN.md", "docs/ARCHITECTURE.md", "tests/test_references.py"} <= rels
    assert set(packages()) >= {"oblique", "analysis"}
    assert not any(rel.startswith(HISTORY) for rel in rels)
    assert note_definitions(sources()), "no Note is defined anywhere: the definition form is not recognized"


@pytest.mark.parametrize("check", CHECKS)
def test_every_reference_resolves(check):
    problems = CHECKS[check](sources())
    assert not problems, f"{len(problems)} broken reference(s):\n" + "\n".join(problems)


#: made-up files, each with one broken reference of its kind beside a sound one; "@" keeps this file's own
#: source from holding the reference (it is removed before the text is read)
BROKEN = {
    "notes": (
        "oblique/made_up.py",
        '"""Note@ [a sound one]: defined.\n\nSee Note@ [a sound one], Note@ [none such]."""',
    ),
    "documents": ("docs/made_up.md", 'See README@, "No such section" and [the design](DESIGN.md#nowhere).'),
    "paths": (
        "docs/made_up.md",
        "In `oblique/` and `oblique/no_such.py`.\n```\noblique/\n  fit.py  gone.py\n```",
    ),
    "names": ("docs/made_up.md", "`oblique.geometry.drift` and `oblique.geometry.no_such_function`"),
    "issues": ("oblique/made_up.py", "# geoopt issue 226 is upstream's; see issue@ 7 of ours"),
}


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_finds_a_broken_reference(check):
    """Each check reports the broken references of a made-up file, and only those."""
    rel, text = BROKEN[check]
    problems = CHECKS[check]([parse(ROOT / rel, text.replace("@", "") + "\n")])
    assert len(problems) == (2 if check in ("documents", "paths") else 1), problems
    assert all(p.startswith(f"{rel}:") for p in problems), problems


# ------------------------------------------------------------------------------------------ documents that hold data


def _tables(path: Path) -> dict[str, list[list[str]]]:
    """heading -> the rows of the table under it, its header first, cells stripped (the rule left out)."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.fullmatch(r"[|\-: ]+", line):
            tables.setdefault(heading, []).append([cell.strip() for cell in line.strip("|").split("|")])
    return tables


def _poster_tables() -> dict:
    """docs/reference/norm_loss_poster.md read into the shape of ``PUBLISHED``."""
    labels = {"poster": "", "reproduction": "repr", "published": "pub"}
    out: dict = {}
    path = ROOT / "docs" / "reference" / "norm_loss_poster.md"
    for heading, (header, *rows) in _tables(path).items():
        names = re.findall(r"`([^`]+)`", heading)  # the data set and the model
        if len(names) != 2:
            continue
        columns = header[2:]
        for method, source, *cells in rows:
            if not method.startswith("`"):
                continue  # no method of this toolkit
            entry = out.setdefault(tuple(names), {}).setdefault(method.strip("`"), {})
            values = [None if c == "–" else float(c) for c in cells]
            if columns == ["best", "mean"]:
                entry[labels[source]] = tuple(values)
            else:  # top-1 best, top-5 best
                entry[labels[source]] = (values[0], None)
                if values[1] is not None:
                    entry[f"{labels[source]} top5".strip()] = (values[1], None)
    return out


def test_the_poster_transcription_and_the_code_hold_the_same_numbers():
    """``docs/reference/norm_loss_poster.md`` (what the code cites) and ``oblique.study.published.PUBLISHED``
    (what the study prints) are the same figures."""
    from oblique.study.published import PUBLISHED

    assert _poster_tables() == PUBLISHED
