"""Security: safe model loading, run ids that cannot escape the artifact root, an escaped report, no secrets."""

from __future__ import annotations

import html.parser
import re
import subprocess
from pathlib import Path

import pytest

from include import artifacts
from include.artifacts import RunPaths, safe_run_id
from include.config import ExperimentConfig
from tests.reliability import secret_scan
from tests.reliability.helpers import ROOT, permanent_failure, snapshot
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist


# -- Keras safe mode ------------------------------------------------------------------------------------
@pytest.mark.unit
def test_model_with_a_lambda_layer_is_refused(tmp_path: Path):
    import keras

    marker = tmp_path / "code-ran"
    # The layer's code leaves a marker file when it runs: a stand-in for any payload.
    payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Lambda(payload)])
    path = tmp_path / "pretrain_seed42.keras"
    model.save(path)
    marker.unlink()  # building the model ran it once; from here on only loading could

    msg = str(permanent_failure(lambda: artifacts.load_model(path)))  # permanent: no retry loads it again
    assert "refused to load" in msg and "Lambda" in msg and "safe mode" in msg
    assert not marker.exists()

    keras.saving.load_model(path, safe_mode=False)  # the threat is real: without safe mode the code runs
    assert marker.exists()


@pytest.mark.unit
def test_pipeline_code_loads_models_only_through_safe_mode():
    """No other way to deserialise code in the pipeline: every model load goes through artifacts.load_model."""
    risky = re.compile(r"safe_mode\s*=\s*False|enable_unsafe_deserialization|keras\.(?:models|saving)\.load_model|"
                       r"tf\.keras\.models\.load_model|pickle\.loads?\(|allow_pickle\s*=\s*True|\beval\(|\bexec\(|"
                       r"yaml\.load\(|shell\s*=\s*True|os\.system\(")
    sources = [p for d in ("dags", "include", "tasks", "plugins", "deploy") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) >= 10
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources
            for i, line in enumerate(p.read_text().splitlines(), 1) if risky.search(line)]
    safe_call = "keras.saving.load_model(path, compile=False, safe_mode=True)"
    allowed = [h for h in hits if h.startswith("include/artifacts.py") and safe_call in h]
    assert sorted(set(hits) - set(allowed)) == []
    assert len(allowed) == 1  # the one load, with safe_mode=True


# -- run ids --------------------------------------------------------------------------------------------
EVIL_RUN_IDS = ["../../etc/passwd", "..", ".", "../", "a/b/c", "/absolute/path", "x; rm -rf ~", "$(touch pwned)",
                "`touch pwned`", "a|b&c>d<e", "name with spaces", "~root", "nul\x00byte", "new\nline", "-rf",
                ".hidden", "champion", "history.jsonl", "ünïcödé", "A" * 300,
                "manual__2026-01-01T02:00:00+00:00", "scheduled__2026-01-01T02:00:00+00:00"]


@pytest.mark.parametrize("run_id", EVIL_RUN_IDS, ids=lambda r: repr(r)[:40])
@pytest.mark.unit
def test_run_id_becomes_one_safe_folder_name(run_id: str, tmp_path: Path):
    safe = safe_run_id(run_id)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}", safe), safe  # one plain name, no dot-dot, no dash-option
    assert safe not in {"champion", "history.jsonl"}  # never the store's own names
    paths = RunPaths.for_run(run_id, root=tmp_path)
    for folder, parent in ((paths.models, "models"), (paths.reports, "reports"), (paths.data, "data")):
        assert folder.resolve().parent == (tmp_path / parent).resolve()
    assert paths.models != paths.champion


@pytest.mark.unit
def test_distinct_run_ids_stay_distinct():
    safe = [safe_run_id(r) for r in [*EVIL_RUN_IDS, "a_b", "a/b", "a b", "a?b", "A" * 301]]
    assert len(set(safe)) == len(safe)


@pytest.mark.unit
def test_evil_run_ids_write_nothing_outside_the_artifact_root(tmp_path: Path, monkeypatch):
    from tasks import split_data

    box = tmp_path / "box"  # everything the test can see; the root is one level down
    data = write_tiny_fashion_mnist(box / "idx")
    root = box / "deep" / "root"
    monkeypatch.chdir(box)  # a shell-injected `touch pwned` would land here
    before, idx_before = set(snapshot(box)), snapshot(box, "idx")
    cfg = ExperimentConfig.from_params({**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(data)})
    for run_id in ("../../escape", "../../../idx", "$(touch pwned)", "`touch pwned`; x", "/tmp/abs"):
        split_data.run(cfg, RunPaths.for_run(run_id, root=root))
    new = set(snapshot(box)) - before
    assert all(f.startswith("deep/root/data/") for f in new), sorted(f for f in new if not f.startswith("deep/root"))
    runs = {f.split("/")[3] for f in new} - {"splits"}
    assert len(runs) == 5  # five run folders, one per run id
    assert all(f"deep/root/data/{r}/split.json" in new for r in runs)
    # The split arrays are content-addressed: one shared store entry for all five runs.
    assert len({f.split("/")[4] for f in new if f.split("/")[3] == "splits"}) == 1
    assert snapshot(box, "idx") == idx_before  # "../../../idx" did not touch the real idx folder
    assert not list(tmp_path.rglob("pwned")) and not (ROOT / "pwned").exists()


# -- the report escapes every string it shows -----------------------------------------------------------
class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


@pytest.mark.training
def test_report_escapes_run_id_param_and_history(tmp_path: Path):
    from tasks import compare_report, split_data, train

    # data_dir is a free-text param: a real folder whose path spells a script tag.
    data = write_tiny_fashion_mnist(tmp_path / "<script>alert('dir')<" / "script>")
    run_id = "manual__<script>alert(\"run\")</script><img src=x onerror=alert(1)>"
    root = tmp_path / "artifacts"
    paths = RunPaths.for_run(run_id, root=root)
    # A tampered history line from an earlier run shows up in the report's trend table.
    artifacts.write_text(paths.reports_root / "history.jsonl",
                         '{"run": "<script>alert(\'hist\')</script>", "finished_at": "<b onmouseover=alert(2)>", '
                         '"verdict_kind": "</table><script>alert(3)</script> | x \\\\| y"}\n')
    cfg = ExperimentConfig.from_params({**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(data)})
    job = split_data.run(cfg, paths)[0]
    pretrained = train.pretrain(cfg, job["manifest"], 42, paths)
    scratch = train.scratch_for_chunk(cfg, job, paths)
    transfer = train.finetune_for_chunk(cfg, job, train.head_for_chunk(cfg, job, [pretrained], paths), paths)
    out = compare_report.run(cfg, job["manifest"], scratch, transfer, paths, run_id)

    page = Path(out["html_path"]).read_text()
    assert Path(out["html_path"]).parent == root / "reports" / safe_run_id(run_id)
    parser = _Tags()
    parser.feed(page)
    tags = {t for t, _ in parser.tags}
    assert "script" not in tags and "iframe" not in tags and "object" not in tags
    assert "<script" not in page.lower()
    for tag, attrs in parser.tags:
        assert not [a for a, _ in attrs if a.lower().startswith("on")], (tag, attrs)
        if tag == "img":
            assert dict(attrs)["src"].startswith("data:image/png;base64,")
    # The injected strings are shown, as text (escaped as Jinja2 autoescaping, i.e. markupsafe, writes them).
    assert "&lt;script&gt;alert(&#34;run&#34;)&lt;/script&gt;" in page  # title and heading
    assert "&lt;script&gt;alert(&#39;hist&#39;)&lt;/script&gt;" in page  # the history table
    assert "&lt;script&gt;alert(&#39;dir&#39;)&lt;/script&gt;" in page  # data_dir, in the provenance block
    assert "default-src 'none'" in page  # and a CSP that would block scripts anyway

    # report.md: the same strings as literal text; no tag, link or extra table cell gets through.
    md = (Path(out["html_path"]).parent / "report.md").read_text()
    assert not re.search(r"(?<!\\)[<>]", md), "an unescaped < or > in report.md"
    assert "# Transfer learning report: manual\\_\\_\\<script\\>alert(\"run\")\\</script\\>" in md
    trend = md.split("## Recent runs")[1].split("\n\n")[1].splitlines()
    cells = [re.sub(r"\\.", "", row).count("|") for row in trend]  # unescaped pipes only
    assert len(set(cells)) == 1, trend  # every row has the header's number of cells


# -- no secrets in the tree -----------------------------------------------------------------------------
P, S = "PASS" + "WORD", "SEC" + "RET"  # built up so this file does not trip the scanner itself


@pytest.mark.parametrize("name,text,rule", [
    ("key.txt", "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIB\n", "private key"),
    ("cfg.py", "aws = '" + "AKIA" + "Q" * 16 + "'\n", "AWS access key id"),
    ("ci.sh", "TOKEN=" + "ghp_" + "a1" * 18 + "\n", "GitHub token"),
    ("hook.py", "url = 'x'  # " + "xoxb-" + "1234567890-abc\n", "Slack token"),
    ("airflow.env", "AIRFLOW__CORE__FERNET_KEY=" + "A" * 43 + "=\n", "Fernet key literal"),
    ("settings.yaml", "sql: postgresql+psycopg2://airflow:" + "hunter2@postgres/airflow\n", "password in a URL"),
    ("docker-compose.yaml", f"  _AIRFLOW_WWW_USER_{P}: ${{_AIRFLOW_WWW_USER_{P}:-airflow}}\n",
     "default secret in ${VAR:-default}"),
    ("docker-compose.yaml", f"    POSTGRES_{P}: airflow\n", f"literal value for POSTGRES_{P}"),
    ("Makefile", "\tairflow users create --username admin --" + "password admin\n", "password on a command line"),
    ("stack.py", f"user = {{'username': 'admin', '{P.lower()}': 'admin'}}\n", "default password literal"),
    (".env", f"API_{S}_KEY=abc\n", "secret-bearing file would be committed"),
])
@pytest.mark.unit
def test_secret_scanner_finds_planted_secrets(tmp_path: Path, name: str, text: str, rule: str):
    (tmp_path / name).write_text(text)
    found = secret_scan.scan(tmp_path)
    assert rule in {f.rule for f in found}, [str(f) for f in found]


@pytest.mark.unit
def test_secret_scanner_accepts_references(tmp_path: Path):
    (tmp_path / "docker-compose.yaml").write_text(
        f"x-env:\n  AIRFLOW__CORE__FERNET_KEY: ${{AIRFLOW__CORE__FERNET_KEY:?set it in .env}}\n"
        f"  POSTGRES_{P}: ${{POSTGRES_{P}}}\n"
        f"  AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: postgresql+psycopg2://airflow:${{POSTGRES_{P}}}@postgres/airflow\n")
    (tmp_path / ".env.example").write_text(f"POSTGRES_{P}=<set-me>\n")
    (tmp_path / "stack.py").write_text(f"{P.lower()} = secrets.token_urlsafe(24)\n")
    assert secret_scan.scan(tmp_path) == []


@pytest.mark.unit
def test_no_secrets_in_the_repository():
    files = secret_scan.candidate_files(ROOT)
    assert len(files) >= 30 and any(f.name == "README.md" for f in files)  # it really looked at the tree
    found = secret_scan.scan(ROOT)
    assert found == [], "\n".join(map(str, found))


@pytest.mark.unit
def test_compose_files_carry_no_default_admin_password():
    """docker-compose files must take every password from .env (${VAR:?...}), never ship a default."""
    secret_key = re.compile(r"^\s*-?\s*['\"]?([A-Z0-9_]*(?:PASSWORD|SECRET|FERNET_KEY|JWT|REDISCLI_AUTH)[A-Z0-9_]*)"
                            r"['\"]?\s*[:=]\s*(\S.*)$")
    for path in secret_scan.compose_files(ROOT):  # whenever a compose file is present
        text = path.read_text()
        found = secret_scan.scan_text(str(path.relative_to(ROOT)), text)
        assert found == [], "\n".join(map(str, found))
        # Required, not defaulted: ${VAR:?message} stops compose when VAR is unset; ${VAR} would
        # quietly start with an empty password.
        values = [m.group(2) for line in text.splitlines() if (m := secret_key.match(line))
                  and not secret_scan.POINTER_KEY.search(m.group(1))]
        values += re.findall(r"://[^/\s:@]*:(\$\{[^}]*\})@", text)  # passwords inside connection URLs
        assert values, f"{path.name}: no secret settings found; has the format changed?"
        for v in values:
            assert v.startswith("${") and ":?" in v.split("}")[0], f"{path.name}: {v} is not a required ${{VAR:?...}}"
    # Where the secrets do live is ignored by git: .env and Airflow's generated admin passwords.
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", ".env",
                              ".airflow/simple_auth_manager_passwords.json.generated"], capture_output=True, text=True)
    assert ignored.stdout.split() == [".env", ".airflow/simple_auth_manager_passwords.json.generated"]
