"""A small secret scanner for this repository: likely secret literals and default passwords.

Scans every file git would commit (tracked plus untracked-but-not-ignored), or the whole tree
without git. Run it by hand with `python -m tests.reliability.secret_scan`; the test suite runs it
in tests/reliability/test_security.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = {".git", ".venv", ".airflow", "node_modules", "__pycache__", "models", "reports", "data", "logs"}
CONFIG_SUFFIXES = {".env", ".yaml", ".yml", ".cfg", ".ini", ".toml", ".conf", ".properties", ".json"}
SECRET_WORD = r"(?:PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|FERNET_KEY|API_KEY|PRIVATE_KEY|ACCESS_KEY)"
# Values that are obviously not a secret: empty, a reference to something else, or a placeholder.
REFERENCE = re.compile(r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*(?::\?[^}]*)?\}?|\{\{.*\}\}|<[^>]*>|\*+|null|none|~|"
                       r"true|false)$", re.IGNORECASE)
WEAK_DEFAULTS = {"admin", "airflow", "password", "changeme", "secret", "postgres", "root", "123456", "test",
                 "guest", "letmein"}

LINE_RULES: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY(?: BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Fernet key literal": re.compile(r"FERNET_KEY['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9_-]{43}="),
    # user:password@host in a URL, unless the password is a ${reference} or placeholder.
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?!\$|\{|<|\*)([^@\s/'\"]+)@"),
    # ${VAR:-default} where VAR names a secret: a compose/shell default that ships a password.
    "default secret in ${VAR:-default}": re.compile(r"\$\{[A-Za-z0-9_]*" + SECRET_WORD + r"[A-Za-z0-9_]*:?-[^}]+\}",
                                                    re.IGNORECASE),
    "password on a command line": re.compile(r"--password[= ]+['\"]?(?![$<{*])[^\s'\"]+"),
}
# KEY: value / KEY=value in config-like files.
CONFIG_ASSIGN = re.compile(r"^\s*(?:export\s+|-\s+)?['\"]?([A-Za-z0-9_.-]*" + SECRET_WORD + r"[A-Za-z0-9_.-]*)"
                           r"['\"]?\s*[:=]\s*['\"]?([^'\"\s#,}]*)", re.IGNORECASE)
# Keys whose value points at the secret (a file, a command) rather than holding it.
POINTER_KEY = re.compile(r"_(?:FILE|PATH|CMD)$", re.IGNORECASE)
# name = "literal" in code: flagged when the literal is a weak default password.
CODE_ASSIGN = re.compile(r"\b\w*(?:password|passwd|secret|token)\w*['\"]?\s*[:=]\s*['\"]([^'\"]+)['\"]",
                         re.IGNORECASE)
SECRET_FILES = re.compile(r"(?:^|/)(?:\.env(?:\.[^/]*)?|id_rsa|id_ed25519|[^/]+\.pem|[^/]+\.p12|[^/]+\.pfx|"
                          r"\.htpasswd|simple_auth_manager_passwords\.json(?:\.generated)?)$")
SAFE_FILE_NAMES = re.compile(r"(?:^|/)\.env\.(?:example|sample|template)$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text.strip()[:120]}"


def candidate_files(root: Path) -> list[Path]:
    """What a commit could contain: git's tracked + untracked-not-ignored files, else a tree walk."""
    try:
        res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True)
        names = [n for n in res.stdout.decode().split("\0") if n]
        return sorted(root / n for n in names if (root / n).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in root.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts))


def scan_text(rel: str, text: str) -> list[Finding]:
    out: list[Finding] = []
    is_config = Path(rel).suffix in CONFIG_SUFFIXES or Path(rel).name.startswith((".env", "Dockerfile"))
    for no, line in enumerate(text.splitlines(), 1):
        for rule, rx in LINE_RULES.items():
            if rx.search(line):
                out.append(Finding(rel, no, rule, line))
        if is_config:
            m = CONFIG_ASSIGN.search(line)
            if m and m.group(2) and not REFERENCE.match(m.group(2)) and not POINTER_KEY.search(m.group(1)):
                out.append(Finding(rel, no, f"literal value for {m.group(1)}", line))
        else:
            for m in CODE_ASSIGN.finditer(line):
                if m.group(1).lower() in WEAK_DEFAULTS:
                    out.append(Finding(rel, no, "default password literal", line))
    return out


def scan(root: Path) -> list[Finding]:
    findings: list[Finding] = []
    for path in candidate_files(root):
        rel = str(path.relative_to(root))
        if SECRET_FILES.search(rel) and not SAFE_FILE_NAMES.search(rel):
            findings.append(Finding(rel, 0, "secret-bearing file would be committed", rel))
        raw = path.read_bytes()[:2_000_000]
        if b"\0" in raw[:8192]:
            continue  # binary
        findings += scan_text(rel, raw.decode("utf-8", errors="replace"))
    return findings


def compose_files(root: Path) -> list[Path]:
    return [p for p in candidate_files(root) if re.fullmatch(r"(?:docker-)?compose(?:\.[\w-]+)?\.ya?ml", p.name)]


if __name__ == "__main__":
    found = scan(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
    print("\n".join(map(str, found)) or "no findings")
    sys.exit(1 if found else 0)
