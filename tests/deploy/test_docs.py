"""README.md and examples/digits/README.md stay true: the flag table lists every flag of
`cli/flags.py` with its default, the setup commands stay first, paths named exist, and the
README's Python client examples run against a real server with the bundled demo model."""

from __future__ import annotations

import contextlib
import io
import re

from pyserving.cli.flags import FLAGS
from support import REPO, ServerProcess

README = REPO / "README.md"
DIGITS_README = REPO / "examples" / "digits" / "README.md"

# Defaults that depend on the machine, written symbolically in the table (N = CPUs).
SYMBOLIC = {"rest_api_num_threads": ("4×N", 4), "grpc_max_threads": ("4×N", 4), "num_tflite_pools": ("N", 1)}


def render_default(flag) -> str:
    if flag.name in SYMBOLIC:
        return SYMBOLIC[flag.name][0]
    value = flag.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def expected_row(flag) -> str:
    ours = flag.help.startswith("pyserving:")
    tf = "— (pyserving only)" if ours else f"`{render_default(flag)}`"
    return f"| `--{flag.name}` | `{render_default(flag)}` | {tf} | ... |"


def flag_rows() -> dict[str, list[str]]:
    text = README.read_text()
    section = text.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `--(\w+)` \|", line)
        if match:
            assert match.group(1) not in rows, f"--{match.group(1)} listed twice"
            rows[match.group(1)] = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return rows


def test_flag_table_lists_every_flag_with_its_default():
    rows = flag_rows()
    problems = []
    for flag in FLAGS:
        row = rows.get(flag.name)
        ours = flag.help.startswith("pyserving:")
        tf_cell = "— (pyserving only)" if ours else f"`{render_default(flag)}`"
        if row is None or row[1] != f"`{render_default(flag)}`" or row[2] != tf_cell \
                or (flag.inert and "no effect" not in row[3]):
            problems.append(f"expected: {expected_row(flag)}" + ("  (inert: say 'accepted, no effect')" if flag.inert else "")
                            + f"\n     got: {' | '.join(row) if row else 'no row'}")
    extra = set(rows) - {f.name for f in FLAGS}
    assert not problems and not extra, "README flag table out of date:\n" + "\n".join(problems) + \
        (f"\nnot flags any more: {sorted(extra)}" if extra else "")


def test_symbolic_defaults_are_what_the_code_computes():
    import os

    cpus = os.cpu_count() or 1
    for flag in FLAGS:
        if flag.name in SYMBOLIC:
            assert flag.default == SYMBOLIC[flag.name][1] * cpus, flag.name


def test_setup_commands_stay_first():
    first_block = README.read_text().split("```", 2)[1]
    assert "./scripts/demo" in first_block and "./scripts/test" in first_block
    assert (REPO / "scripts" / "demo").is_file() and (REPO / "scripts" / "test").is_file()


def test_paths_named_in_the_docs_exist():
    for doc in (README, DIGITS_README, REPO / "deploy" / "k8s" / "README.md", REPO / "docs" / "rest-json.md"):
        text = doc.read_text()
        named = set(re.findall(r"`((?:bench|docker|deploy|docs|examples|src)/[\w./-]+|docker-compose\.yml|Dockerfile)`",
                               text))
        for path in named:
            assert (REPO / path.rstrip("/")).exists(), f"{doc.name} names {path}"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run_against_the_demo_model():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    with ServerProcess("--model_name=half_plus_two", f"--model_base_path={REPO / 'examples/models/half_plus_two'}") as server:
        for block in blocks:
            code = block.replace("localhost:8501", f"127.0.0.1:{server.rest_port}") \
                        .replace("localhost:8500", server.grpc_target)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102
            printed = out.getvalue()
            expected = re.search(r"print\(.*\)\s*# (.*)", block).group(1).strip()
            assert printed.strip() == expected, (block, printed)
