"""Code contexts built offline from the Python standard library's own source: function
signatures (and docstrings) as prompts whose completion is the body.
"""

from __future__ import annotations

import ast
import os
import sysconfig
import textwrap
from pathlib import Path



_STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
                "turtledemo", "ensurepip", "tkinter", "pydoc_data"}


def stdlib_functions(max_functions: int | None = 2000, docstring: bool = True, max_signature_lines: int = 3,
                     max_docstring_lines: int = 12, root: str | None = None) -> list[tuple[str, str, str]]:
    """``(module.name:line, prompt, body)`` for functions of the standard library's own sources.

    The prompt is the (dedented) ``def`` line(s), with the docstring when ``docstring``; the
    body is the rest of the function (a reference). Functions are visited in a fixed order
    (sorted files, source order), so the list is the same on every machine with the same
    Python. Only functions with a docstring are taken (also when the prompt omits it).
    """
    root = root or sysconfig.get_paths()["stdlib"]
    out: list[tuple[str, str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP)
        for fname in sorted(f for f in filenames if f.endswith(".py")):
            path = os.path.join(dirpath, fname)
            try:
                text = Path(path).read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                continue
            lines = text.splitlines()
            module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
                    continue
                doc = node.body[0]
                if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                        and isinstance(doc.value.value, str)):
                    continue
                sig = lines[node.lineno - 1 : doc.lineno - 1]
                docl = lines[doc.lineno - 1 : doc.end_lineno]
                body = lines[doc.end_lineno : node.end_lineno]
                if not sig or len(sig) > max_signature_lines or len(docl) > max_docstring_lines:
                    continue
                if any("\t" in ln for ln in sig + docl + body):
                    continue
                block = textwrap.dedent("\n".join(sig + docl + body) + "\n")
                n_sig, n_doc = len(sig), len(docl)
                blines = block.splitlines()
                prompt_lines = blines[: n_sig + n_doc] if docstring else blines[:n_sig]
                out.append((f"{module}.{node.name}:{node.lineno}", "\n".join(prompt_lines) + "\n",
                            "\n".join(blines[n_sig + n_doc :]) + "\n"))
                if max_functions is not None and len(out) >= max_functions:
                    return out
    return out
