"""Code, math, structured and technical documents: Python standard library sources and docstrings, and generated text."""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from .common import MIN_CHARS, OBJECTS, TOWNS, fill, person


CODE_MODULES = (
    "argparse", "base64", "bisect", "calendar", "colorsys", "contextlib", "copy", "csv",
    "dataclasses", "difflib", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob",
    "heapq", "hmac", "ipaddress", "json/decoder", "json/encoder", "mimetypes", "numbers",
    "optparse", "pprint", "queue", "sched", "shlex", "statistics", "textwrap",
)
DOC_MODULES = (
    "argparse", "base64", "bisect", "calendar", "contextlib", "csv", "difflib", "fnmatch",
    "fractions", "functools", "heapq", "ipaddress", "shlex", "shutil", "statistics", "textwrap",
    "string", "json/__init__", "glob", "tempfile",
)


def _stdlib_source(module: str) -> str | None:
    root = Path(sysconfig.get_paths()["stdlib"])
    for candidate in (root / f"{module}.py", root / module / "__init__.py"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    return None


def _stdlib_code() -> Iterator[str]:
    for module in CODE_MODULES:
        source = _stdlib_source(module)
        if source is None:
            continue
        lines = source.split("\n")
        chunks = [lines[i : i + 40] for i in range(40, len(lines), 120)]  # every third 40-line piece
        kept = 0
        for chunk in chunks:
            text = "\n".join(chunk).strip("\n")
            if len(text) >= MIN_CHARS:
                yield f"# {module.replace('/', '.')}.py\n{text}"
                kept += 1
                if kept == 4:
                    break


_SQL = (
    "SELECT c.id, c.name, COUNT(o.id) AS orders, SUM(o.total) AS revenue\nFROM customers AS c\n"
    "JOIN orders AS o ON o.customer_id = c.id\nWHERE o.created_at >= '{date}'\n  AND c.country = '{cc}'\n"
    "GROUP BY c.id, c.name\nHAVING COUNT(o.id) > {n}\nORDER BY revenue DESC\nLIMIT {limit};\n\n"
    "CREATE INDEX idx_orders_customer ON orders (customer_id, created_at);\n\n"
    "UPDATE inventory\nSET quantity = quantity - {q}\nWHERE sku = '{sku}' AND quantity >= {q};"
)
_SHELL = (
    "#!/usr/bin/env bash\nset -euo pipefail\n\nSRC_DIR=\"${{1:-./data}}\"\nDEST=\"/var/backups/{name}\"\n"
    "KEEP={n}\n\nmkdir -p \"$DEST\"\nstamp=$(date +%Y%m%d-%H%M%S)\n"
    "tar -czf \"$DEST/{name}-$stamp.tar.gz\" -C \"$SRC_DIR\" .\n\n"
    "# keep only the newest $KEEP archives\nls -1t \"$DEST\"/{name}-*.tar.gz | tail -n +$((KEEP + 1)) | while read -r old; do\n"
    "    echo \"removing $old\"\n    rm -f -- \"$old\"\ndone\n\necho \"backup of $SRC_DIR done ({limit} MB limit)\"\n"
)
_JS = (
    "export function {fname}(items, {{ limit = {limit}, key = \"{key}\" }} = {{}}) {{\n"
    "  const seen = new Map();\n  for (const item of items) {{\n    const k = item[key];\n"
    "    if (k === undefined) continue;\n    seen.set(k, (seen.get(k) ?? 0) + 1);\n  }}\n"
    "  return [...seen.entries()]\n    .sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))\n"
    "    .slice(0, limit)\n    .map(([value, count]) => ({{ value, count }}));\n}}\n\n"
    "const sample = [{{ {key}: \"{v1}\" }}, {{ {key}: \"{v2}\" }}, {{ {key}: \"{v1}\" }}];\n"
    "console.log({fname}(sample, {{ limit: {n} }}));\n"
)
_C = (
    "#include <stddef.h>\n#include <stdint.h>\n\n/* Running checksum over a buffer, {n}-byte blocks. */\n"
    "uint32_t {fname}(const uint8_t *buf, size_t len)\n{{\n    uint32_t a = 1, b = 0;\n"
    "    const uint32_t mod = {mod}u;\n\n    for (size_t i = 0; i < len; i++) {{\n"
    "        a = (a + buf[i]) % mod;\n        b = (b + a) % mod;\n    }}\n    return (b << 16) | a;\n}}\n\n"
    "int main(void)\n{{\n    const uint8_t msg[] = \"{v1}\";\n"
    "    return (int)({fname}(msg, sizeof msg - 1) & 0x{mask:x});\n}}\n"
)


def _other_code() -> Iterator[str]:
    rng = random.Random(1501)
    templates = (_SQL, _SHELL, _JS, _C)
    for i in range(32):
        slots = dict(
            date=f"20{rng.randrange(15, 25)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            cc=rng.choice(("DE", "FR", "JP", "BR", "KE", "IN", "CA")), n=rng.randrange(2, 20),
            limit=rng.randrange(5, 500), q=rng.randrange(1, 12), sku=f"SKU-{rng.randrange(1000, 9999)}",
            name=rng.choice(("photos", "mail", "projects", "db", "notes")),
            fname=rng.choice(("topCounts", "countBy", "checksum", "tally", "digest")),
            key=rng.choice(("city", "tag", "status", "author")), v1=rng.choice(TOWNS), v2=rng.choice(TOWNS),
            mod=rng.choice((65521, 65519, 32749)), mask=rng.randrange(0x100, 0xFFFF),
        )
        yield templates[i % len(templates)].format(**slots)


def _code() -> Iterator[str]:
    yield from _stdlib_code()
    yield from _other_code()


# ---------------------------------------------------------------------------------------------
# math


def _poly(coeffs: list[int]) -> str:
    terms = []
    degree = len(coeffs) - 1
    for i, c in enumerate(coeffs):
        p = degree - i
        if c == 0:
            continue
        mag = abs(c)
        body = ("" if mag == 1 and p else str(mag)) + ("x" if p >= 1 else "") + (f"^{{{p}}}" if p > 1 else "")
        terms.append(("-" if c < 0 else "+") + " " + body)
    text = " ".join(terms) or "0"
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _math_item(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        a, p, d = rng.randrange(20, 400), rng.randrange(150, 900) / 100, rng.randrange(3, 31)
        total = a * p * d
        return (
            f"Problem. A bakery sells {a} loaves a day at {p:.2f} euros each. How much does it take in over {d} days?\n"
            f"Solution. One day brings {a} × {p:.2f} = {a * p:.2f} euros. Over {d} days that is "
            f"{a * p:.2f} × {d} = {total:.2f} euros."
        )
    if kind == 1:
        x, a, b = rng.randrange(-20, 21), rng.randrange(2, 13), rng.randrange(-50, 51)
        c = a * x + b
        return (
            f"Solve {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}.\n"
            f"Subtract {b} from both sides: {a}x = {c - b}.\nDivide by {a}: x = {x}.\n"
            f"Check: {a} · ({x}) {'+' if b >= 0 else '-'} {abs(b)} = {c}. ✓"
        )
    if kind == 2:
        rows = []
        for _ in range(rng.randrange(6, 12)):
            op = rng.randrange(4)
            u, v = rng.randrange(10, 99999), rng.randrange(2, 999)
            if op == 0:
                rows.append(f"{u} + {v} = {u + v}")
            elif op == 1:
                rows.append(f"{u} - {v} = {u - v}")
            elif op == 2:
                rows.append(f"{u} × {v} = {u * v}")
            else:
                rows.append(f"{u * v} ÷ {v} = {u}")
        return "Arithmetic practice:\n" + "\n".join(rows)
    if kind == 3:
        coeffs = [rng.randrange(-9, 10) for _ in range(rng.randrange(3, 6))]
        coeffs[0] = coeffs[0] or 1
        degree = len(coeffs) - 1
        deriv = [c * (degree - i) for i, c in enumerate(coeffs[:-1])]
        return (
            f"Differentiate term by term using the power rule $\\frac{{d}}{{dx}} x^n = n x^{{n-1}}$:\n"
            f"$$\\frac{{d}}{{dx}}\\left({_poly(coeffs)}\\right) = {_poly(deriv)}$$"
        )
    if kind == 4:
        n = rng.randrange(2, 50) * rng.randrange(2, 50) * rng.choice((2, 3, 5, 7, 11))
        m = rng.randrange(2, 60) * rng.choice((2, 3, 5, 7))
        factors, k, p = [], n, 2
        while p * p <= k:
            while k % p == 0:
                factors.append(p)
                k //= p
            p += 1
        if k > 1:
            factors.append(k)
        g, h = n, m
        while h:
            g, h = h, g % h
        return (
            f"The prime factorisation of {n} is {' × '.join(map(str, factors))}.\n"
            f"By the Euclidean algorithm, gcd({n}, {m}) = {g}, so lcm({n}, {m}) = {n} · {m} / {g} = {n * m // g}."
        )
    if kind == 5:
        a, d, n = rng.randrange(-10, 30), rng.randrange(2, 12), rng.randrange(8, 40)
        terms = [a + i * d for i in range(6)]
        return (
            f"Consider the arithmetic sequence {', '.join(map(str, terms))}, ... with first term a = {a} and difference d = {d}.\n"
            f"The n-th term is a_n = {a} + (n - 1)·{d}, so a_{n} = {a + (n - 1) * d}.\n"
            f"The sum of the first {n} terms is S_{n} = n(a_1 + a_n)/2 = {n}·({a} + {a + (n - 1) * d})/2 = {n * (2 * a + (n - 1) * d) // 2}."
        )
    if kind == 6:
        A = [[rng.randrange(-5, 6) for _ in range(2)] for _ in range(2)]
        B = [[rng.randrange(-5, 6) for _ in range(2)] for _ in range(2)]
        C = [[sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)] for i in range(2)]

        def mat(M: list[list[int]]) -> str:
            return "\\begin{pmatrix} " + " \\\\ ".join(" & ".join(map(str, r)) for r in M) + " \\end{pmatrix}"

        det = A[0][0] * A[1][1] - A[0][1] * A[1][0]
        return f"$$ {mat(A)} {mat(B)} = {mat(C)} $$\nThe determinant of the first matrix is ({A[0][0]})({A[1][1]}) - ({A[0][1]})({A[1][0]}) = {det}."
    if kind == 7:
        data = sorted(rng.randrange(1, 100) for _ in range(rng.randrange(5, 12)))
        n = len(data)
        mean = sum(data) / n
        median = data[n // 2] if n % 2 else (data[n // 2 - 1] + data[n // 2]) / 2
        var = sum((v - mean) ** 2 for v in data) / n
        return (
            f"Data: {', '.join(map(str, data))} (n = {n}).\n"
            f"Mean = {sum(data)}/{n} = {mean:.3f}. Median = {median}. Range = {data[-1] - data[0]}.\n"
            f"Population variance = {var:.3f}, standard deviation = {var ** 0.5:.3f}."
        )
    n = rng.randrange(2, 4096)
    b, e, m = rng.randrange(2, 20), rng.randrange(5, 60), rng.randrange(7, 100)
    return (
        f"In binary, {n} = {n:b}; in hexadecimal, {n} = 0x{n:X}; in octal, {n} = 0o{n:o}.\n"
        f"Modular exponentiation: {b}^{e} mod {m} = {pow(b, e, m)}, computed by repeated squaring."
    )


def _math() -> Iterator[str]:
    rng = random.Random(1601)
    for _ in range(125):
        yield fill(rng, lambda: _math_item(rng), sep="\n\n")


# ---------------------------------------------------------------------------------------------
# structured data


def _structured_item(rng: random.Random, kind: int) -> str:
    if kind == 0:
        orders = []
        for _ in range(rng.randrange(2, 5)):
            items = [
                {"sku": f"SKU-{rng.randrange(1000, 9999)}", "qty": rng.randrange(1, 6), "price": round(rng.randrange(199, 9999) / 100, 2)}
                for _ in range(rng.randrange(1, 4))
            ]
            orders.append({
                "order_id": rng.randrange(100000, 999999),
                "customer": {"name": person(rng), "city": rng.choice(TOWNS)},
                "items": items,
                "paid": rng.random() < 0.8,
                "total": round(sum(i["qty"] * i["price"] for i in items), 2),
            })
        return json.dumps({"orders": orders}, indent=2, ensure_ascii=False)
    if kind == 1:
        header = "date,station,temp_c,humidity_pct,wind_kmh,rain_mm"
        station = rng.choice(TOWNS).lower().replace(" ", "_")
        rows = [
            f"2024-{rng.randrange(1, 13):02d}-{d:02d},{station},{rng.randrange(-80, 350) / 10:.1f},{rng.randrange(20, 100)},{rng.randrange(0, 90)},{rng.randrange(0, 300) / 10:.1f}"
            for d in range(1, rng.randrange(8, 25))
        ]
        return header + "\n" + "\n".join(rows)
    if kind == 2:
        svc = rng.choice(("api", "worker", "scheduler", "gateway"))
        return (
            f"service:\n  name: {svc}-{rng.randrange(1, 9)}\n  replicas: {rng.randrange(1, 12)}\n  image: registry.example.org/{svc}:{rng.randrange(1, 5)}.{rng.randrange(0, 20)}.{rng.randrange(0, 9)}\n"
            f"  resources:\n    cpu: \"{rng.randrange(1, 16) * 250}m\"\n    memory: {rng.choice((256, 512, 1024, 2048))}Mi\n"
            f"  env:\n    LOG_LEVEL: {rng.choice(('debug', 'info', 'warning'))}\n    TIMEOUT_S: {rng.randrange(5, 120)}\n"
            f"  ports:\n    - {rng.randrange(3000, 9000)}\n    - {rng.randrange(9000, 9999)}\n"
        )
    if kind == 3:
        lines = []
        h, m, s = rng.randrange(0, 24), rng.randrange(0, 60), rng.randrange(0, 60)
        for _ in range(rng.randrange(6, 14)):
            s += rng.randrange(1, 40)
            m, s = m + s // 60, s % 60
            h, m = (h + m // 60) % 24, m % 60
            level = rng.choice(("INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"))
            msg = rng.choice((
                f"GET /api/v1/items/{rng.randrange(1, 5000)} 200 {rng.randrange(2, 900)}ms",
                f"cache miss for key user:{rng.randrange(1, 99999)}",
                f"retrying connection to db-{rng.randrange(1, 4)} (attempt {rng.randrange(1, 5)}/5)",
                f"processed batch of {rng.randrange(10, 5000)} records",
                f"disk usage at {rng.randrange(50, 99)}% on /var",
            ))
            lines.append(f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{h:02d}:{m:02d}:{s:02d}Z {level:<5} {msg}")
        return "\n".join(lines)
    if kind == 4:
        return "\n".join(
            json.dumps({"id": rng.randrange(1, 10**6), "title": f"{rng.choice(OBJECTS).title()} of {rng.choice(TOWNS)}",
                        "year": rng.randrange(1850, 2024), "rating": round(rng.random() * 5, 1),
                        "tags": sorted(rng.sample(("history", "travel", "poetry", "science", "cooking", "maps"), 2))},
                       ensure_ascii=False)
            for _ in range(rng.randrange(3, 9))
        )
    return (
        f"[database]\nhost = db{rng.randrange(1, 9)}.internal\nport = {rng.choice((5432, 3306, 27017))}\nname = {rng.choice(('shop', 'archive', 'metrics'))}\n"
        f"pool_size = {rng.randrange(2, 64)}\n\n[server]\nlisten = 0.0.0.0:{rng.randrange(8000, 8999)}\nworkers = {rng.randrange(1, 17)}\n"
        f"max_body_kb = {rng.randrange(64, 8192)}\n\n[features]\nnew_checkout = {rng.choice(('true', 'false'))}\nbeta_users = {rng.randrange(0, 500)}\n"
    )


def _structured() -> Iterator[str]:
    rng = random.Random(1701)
    for i in range(126):
        kind = i % 6
        yield fill(rng, lambda: _structured_item(rng, kind), sep="\n")


# ---------------------------------------------------------------------------------------------
# technical: standard-library docstrings, legal clauses, specification text


def _docstrings() -> Iterator[str]:
    for module in DOC_MODULES:
        source = _stdlib_source(module)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found: list[str] = []
        name = module.replace("/__init__", "").replace("/", ".")
        doc = ast.get_docstring(tree)
        if doc:
            found.append(f"Module {name}\n\n{doc}")
        nodes: list[tuple[str, ast.AST]] = [("", n) for n in tree.body]
        while nodes:
            prefix, node = nodes.pop(0)
            if isinstance(node, ast.ClassDef):
                nodes[:0] = [(f"{prefix}{node.name}.", n) for n in node.body]
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 120:
                    args = ""
                    if isinstance(node, ast.FunctionDef):
                        args = "(" + ", ".join(a.arg for a in node.args.args) + ")"
                    found.append(f"{name}.{prefix}{node.name}{args}\n\n{doc}")
        docs, group = 0, []
        for item in found:
            group.append(item)
            if sum(len(g) for g in group) >= 300:
                yield "\n\n".join(group)
                docs, group = docs + 1, []
                if docs == 5:
                    break


_LEGAL = (
    "{sec}.1 Definitions. In this Agreement, \"Services\" means the {service} services described in Schedule {sched}, and \"Business Day\" means any day other than a Saturday, Sunday or public holiday in {town}.",
    "{sec}.2 Term. This Agreement commences on the Effective Date and continues for {years} years unless terminated earlier in accordance with clause {sec2}.",
    "{sec}.3 Payment. The Customer shall pay each undisputed invoice within {days} days of receipt. Late payments bear interest at {rate}% per annum above the base rate.",
    "{sec}.4 Confidentiality. Each party shall keep the other party's Confidential Information secret and shall not disclose it except to its employees and advisers who need to know it.",
    "{sec}.5 Liability. Neither party limits its liability for death or personal injury caused by its negligence. Subject to that, each party's total liability shall not exceed {cap} euros.",
    "{sec}.6 Termination. Either party may terminate this Agreement by giving not less than {notice} days' written notice if the other party commits a material breach that is not remedied within that period.",
    "{sec}.7 Force majeure. Neither party shall be in breach of this Agreement if it is prevented from performing its obligations by events beyond its reasonable control.",
    "{sec}.8 Governing law. This Agreement is governed by the laws of the jurisdiction in which {town} is situated, and the parties submit to the exclusive jurisdiction of its courts.",
)
_SPEC = (
    "{sec}. Message format\n\nEach message begins with a {hb}-byte header. The Length field is a {bits}-bit unsigned integer in network byte order that gives the size of the payload in bytes, excluding the header.",
    "A receiver MUST discard any message whose Length field exceeds {max} bytes. A sender SHOULD NOT send payloads larger than {half} bytes unless the peer has advertised support for large frames.",
    "The Flags field is a bit mask. Bit 0 (ACK) indicates acknowledgement; bit 1 (FIN) indicates that the sender will send no further data. Unknown bits MUST be set to zero by senders and MUST be ignored by receivers.",
    "Implementations MAY retransmit a message that has not been acknowledged after {rto} milliseconds. The retransmission timeout SHOULD double after each attempt, up to a maximum of {rmax} seconds.",
    "Version negotiation: a client sends the highest protocol version it supports. A server that does not support that version MUST reply with error code 0x{code:02X} (UNSUPPORTED_VERSION) and close the connection.",
    "Security considerations: because the checksum in section {sec}.{sub} is not cryptographic, it detects accidental corruption only. Deployments that need integrity against attackers MUST use an authenticated transport.",
)
_SERVICES = ("hosting", "maintenance", "translation", "logistics", "consulting", "data processing")


def _legal_and_spec() -> Iterator[str]:
    rng = random.Random(1801)
    for i in range(44):
        sec = rng.randrange(2, 19)
        slots = dict(
            sec=sec, sec2=f"{sec}.6", sub=rng.randrange(1, 9), service=rng.choice(_SERVICES), sched=rng.randrange(1, 5),
            town=rng.choice(TOWNS), years=rng.randrange(1, 6), days=rng.choice((14, 30, 45, 60)),
            rate=rng.randrange(2, 9), cap=f"{rng.randrange(10, 900) * 1000:,}", notice=rng.choice((30, 60, 90)),
            hb=rng.choice((8, 12, 16)), bits=rng.choice((16, 32)), max=rng.choice((16384, 65535, 1048576)),
            half=rng.choice((4096, 8192, 16384)), rto=rng.choice((200, 500, 1000)), rmax=rng.choice((30, 60, 120)),
            code=rng.randrange(1, 64),
        )
        source = _LEGAL if i % 2 == 0 else _SPEC
        start = rng.randrange(0, 3)
        yield "\n\n".join(p.format(**slots) for p in source[start : start + rng.randrange(3, 7)])


def _technical() -> Iterator[str]:
    yield from _docstrings()
    yield from _legal_and_spec()


# ---------------------------------------------------------------------------------------------
# multilingual: short original sentences; {n}, {name} and {day} are filled in
