"""What `kubectl get` shows in a CRD's printer columns, computed the way the apiserver computes it.

Written from k8s.io/apiextensions-apiserver/pkg/registry/customresource/tableconvertor/tableconvertor.go
and k8s.io/client-go/util/jsonpath:

- each column's `jsonPath` is parsed as the template `{<jsonPath>}` with missing keys allowed;
- `FindResults` gives, for that one template node, every value the path reaches (a `[*]` or a filter may
  reach several);
- the cell is `results[0][0]`: the *first* value only ("as we only support simple JSON path, we can
  assume to have only one result"); no value, or an error, is an empty cell;
- a `string` column prints the value as the jsonpath printer does (`fmt.Fprint`: strings as they are,
  numbers and booleans as Go prints them); `integer`, `number`, `boolean`, `date` columns take the JSON
  value when it has that type and are empty otherwise (`cellForJSONValue`).

The path language covered is what printer columns here use: `.field`, `[*]`, `[n]` and filters
`[?(@.field=="text")]` (also `!=`).
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z_][A-Za-z0-9_-]*)
      | \[(?P<all>\*)\]
      | \[(?P<index>-?\d+)\]
      | \[\?\(@(?P<fpath>(?:\.[A-Za-z_][A-Za-z0-9_-]*)+)\s*(?P<op>==|!=)\s*(?P<lit>"[^"]*"|'[^']*'|-?\d+(?:\.\d+)?|true|false)\)\]
    """,
    re.X,
)


class PathError(ValueError):
    pass


def parse(path: str) -> list[tuple[str, Any]]:
    if not path.startswith("."):
        raise PathError(f"{path!r}: must be a simple json path starting with .")
    steps, pos = [], 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            raise PathError(f"{path!r}: cannot parse at {path[pos:]!r}")
        if match.group("field"):
            steps.append(("field", match.group("field")))
        elif match.group("all"):
            steps.append(("all", None))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        else:
            lit = match.group("lit")
            value: Any
            if lit[0] in "\"'":
                value = lit[1:-1]
            elif lit in ("true", "false"):
                value = lit == "true"
            else:
                value = float(lit) if "." in lit else int(lit)
            fields = [f for f in match.group("fpath").split(".") if f]
            steps.append(("filter", (fields, match.group("op"), value)))
        pos = match.end()
    return steps


def find_results(obj: Any, path: str) -> list[Any]:
    """Every value `path` reaches in `obj`, in document order (client-go's FindResults for one node)."""
    values = [obj]
    for kind, arg in parse(path):
        nxt: list[Any] = []
        for value in values:
            if kind == "field":
                if isinstance(value, dict) and arg in value:
                    nxt.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value[k] for k in sorted(value))
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    nxt.append(value[arg])
            else:
                fields, op, literal = arg
                for item in value if isinstance(value, list) else []:
                    got: Any = item
                    for f in fields:
                        got = got.get(f) if isinstance(got, dict) else None
                    if got is not None and ((got == literal) == (op == "==")):
                        nxt.append(item)
        values = nxt
    return values


def _go_print(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cell(obj: dict, column: dict) -> Any:
    """The cell the apiserver puts in a Table row for this column (None: empty)."""
    results = find_results(obj, column["jsonPath"])
    if not results:
        return None
    value = results[0]
    kind = column["type"]
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else _go_print(value)
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        return value
    return None


def row(obj: dict, columns: list[dict]) -> dict[str, Any]:
    return {c["name"]: cell(obj, c) for c in columns}
