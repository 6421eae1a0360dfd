"""Blocker signatures and the classifier, on realistic log lines and the fixtures in data/logs/."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import k3snb
from k3snb.errors import InvalidParameter, UsageError
from k3snb.signatures import load_catalog
from k3snb.signatures._classify import _UNESCAPE, needles, parse_catalog
from k3snb.signatures._cli import register

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"
CAT = load_catalog()
FAILURES = [s for s in CAT.signatures if s.kind == "failure"]
ALL = list(CAT.signatures)


def ids_of(source) -> list[str]:
    return [m["id"] for m in k3snb.classify(source).matches]


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def wrappings(line: str) -> dict[str, str]:
    """The same text as other emitters print it: inside a klog err="…" and a logrus msg="…"
    (quotes escaped once, or twice when containerd's logrus line is re-quoted by k3s)."""
    esc = _escape(line)
    return {
        "klog-err": f'E1122 10:33:15.794727   40906 kubelet.go:1703] "Failed to start ContainerManager" err="{esc}"',
        "klog-colon": f"E1122 10:33:15.794727   40906 kubelet.go:1703] Failed to start ContainerManager: {line}",
        "logrus": f'time="2025-11-22T10:33:15.794727Z" level=error msg="{esc}"',
        "logrus-nested": f'time="2025-11-22T10:33:16Z" level=info msg="containerd: {_escape(f"level=error msg={chr(34)}{esc}{chr(34)}")}"',
        "crlf": line + "\r",
    }


def test_catalogue_covers_research_ids():
    ids = {s.id for s in ALL}
    for n in range(1, 48):
        assert any(re.fullmatch(rf"S{n:02d}[a-z]?", i) for i in ids), f"S{n:02d} missing"
    assert sum(i.startswith("A") for i in ids) >= 10
    stages = {s.stage for s in ALL if s.kind == "progress"}
    for st in ("k3s_started", "apiserver_running", "server_ready", "kubelet_started", "node_registered",
               "node_ready", "pod_scheduled", "sandbox_created", "container_running"):
        assert st in stages


def test_catalogue_fields():
    for s in FAILURES:
        assert s.root_cause and s.source and s.examples, s.id
        assert all(re.fullmatch(r"W([1-9]|[1-3]\d|4[0-8])", w) for w in s.workarounds), s.id
        assert s.severity in ("fatal", "error", "warning", "info")
        assert s.fatal == (s.severity == "fatal"), s.id
    frame = k3snb.list_signatures().to_frame()
    assert len(frame) == len(ALL) and {"id", "pattern", "stage", "workarounds", "root_cause"} <= set(frame.columns)
    assert "<table" in k3snb.list_signatures()._repr_html_()


@pytest.mark.parametrize("sig", ALL, ids=lambda s: s.id)
def test_examples_match_their_own_id(sig):
    assert sig.examples
    for ex in sig.examples:
        assert sig.id in ids_of(ex), ex


@pytest.mark.parametrize("sig", ALL, ids=lambda s: s.id)
def test_wrapped_variants_match(sig):
    for name, line in wrappings(sig.examples[0]).items():
        assert sig.id in ids_of(line), f"{name}: {line}"


def test_needles_are_required_literals():
    assert needles("failed to find plugin \"[\\w.-]+\" in path") == ('failed to find plugin "',)
    assert needles("abcdef|ghijkl") == ("abcdef", "ghijkl")
    assert needles("a|[0-9]+") is None
    assert needles("(?i)cannot mount") is None  # case-insensitive: no exact-case prefilter
    # every needle occurs in every example that matches (otherwise the prefilter would hide matches)
    for s in ALL:
        for ex in s.examples:
            norm = _UNESCAPE.sub('"', ex)
            assert s.needles is None or any(n in norm for n in s.needles), (s.id, ex)


def test_container_manager_forms():
    inner = "failed to get rootfs info: unable to find data in memory cache"
    assert ids_of(f'E1123 05:07:38.580162 kubelet.go:1511] "Failed to start ContainerManager" err="{inner}"') == ["S03"]
    assert ids_of(f"ERROR Failed to start ContainerManager: {inner}") == ["S03"]


def test_clean_log_matches_no_failure():
    res = k3snb.classify(LOGS / "k3s-server-clean.log")
    assert res.lines > 300
    assert res.ids == [] and res.failures.empty and not res.blocked
    assert res.furthest_stage == "container_running"
    assert res.stages_reached[:4] == ["k3s_started", "apiserver_running", "control_plane_running", "server_ready"]


def test_exp21_fixture():
    res = k3snb.classify(LOGS / "exp21-p4-kubelet-procsys.log")
    assert {"S01a", "S01b", "S01c", "S01d", "S01e", "S02", "S47c"} == set(res.ids)
    assert res.furthest_stage == "kubelet_started"
    assert res.first_fatal["id"] == "S01a" and res.first_fatal["line"] == 21
    assert res.blocked_at == "kubelet_started" and res.workarounds == ["W12"]
    b = res.blockers().set_index("id")
    assert b.loc["S02", "workarounds"] == ["W12"] and b.loc["S02", "count"] == 1
    assert "kubelet started" in repr(res) and "S01a" in res._repr_html_()


def test_exp16_fixture():
    res = k3snb.classify(LOGS / "exp16-sandbox-cgroup.log")
    assert res.ids == ["S20", "G01"]
    assert res.blockers().set_index("id").loc["S20", "count"] == 2
    assert res.furthest_stage == "pod_scheduled" and "node_ready" in res.stages_reached
    assert res.blocked_at is None and res.workarounds == ["W24"]
    f = res.failures
    assert list(f[f["id"] == "S20"]["line"]) == [18, 19]


def test_stage_order_is_lifecycle_not_log_order():
    progress = [s.examples[0] for s in ALL if s.kind == "progress" and s.stage != "setup"]
    rng = random.Random(7)
    shuffled = progress[:]
    rng.shuffle(shuffled)
    res = k3snb.classify(shuffled)
    order = [sid for sid, _ in CAT.stages]
    assert res.stages_reached == sorted(res.stages_reached, key=order.index)
    assert res.furthest_stage == "container_running"
    early = [s.examples[0] for s in ALL if s.kind == "progress" and s.stage in ("k3s_started", "apiserver_running")]
    assert k3snb.classify(list(reversed(early))).furthest_stage == "apiserver_running"
    assert k3snb.classify("nothing to see\n").furthest_stage is None


def test_input_kinds(tmp_path):
    text = (LOGS / "exp21-p4-kubelet-procsys.log").read_text()
    want = ids_of(text)
    gz = tmp_path / "k3s.log.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    plain = tmp_path / "k3s.log"
    plain.write_text(text)
    with open(plain) as stream:
        from_stream = ids_of(stream)
    assert from_stream == want
    assert ids_of(str(plain)) == want == ids_of(plain) == ids_of(gz)
    assert ids_of(iter(text.splitlines())) == want
    assert ids_of(io.BytesIO(text.encode())) == want
    assert ids_of(text.encode()) == want


def test_streams_large_logs_in_bounded_blocks():
    failing = (LOGS / "exp21-p4-kubelet-procsys.log").read_text().splitlines()[20]

    def gen():  # a generator of 60k lines: nothing is materialised by the caller
        clean = (LOGS / "k3s-server-clean.log").read_text().splitlines()
        for i in range(60_000):
            yield failing if i == 45_001 else clean[i % len(clean)]

    res = k3snb.classify(gen(), kinds=("failure",))
    assert res.lines == 60_000
    assert {m["line"] for m in res.matches} == {45_002}


@pytest.mark.parametrize("bad", ["/no/such/k3s.log", "missing.log", Path("/nonexistent/x")])
def test_bad_path_is_usage_error(bad):
    with pytest.raises(UsageError) as e:
        k3snb.classify(bad)
    assert "does not exist" in str(e.value) and e.value.hint


def test_directory_and_bad_type(tmp_path):
    with pytest.raises(UsageError):
        k3snb.classify(tmp_path)
    with pytest.raises(UsageError):
        k3snb.classify(42)


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda d: d["signatures"].append(dict(d["signatures"][0])), "duplicate id"),
        (lambda d: d["signatures"][0].update(pattern="(unclosed"), "bad pattern"),
        (lambda d: d["signatures"][0].update(stage="nowhere"), "unknown stage"),
        (lambda d: d["signatures"][0].pop("component"), "lacks"),
        (lambda d: d["signatures"][0].update(severity="meh"), "severity"),
    ],
)
def test_catalogue_validation(mutate, msg):
    import yaml

    data = yaml.safe_load((Path(k3snb.__file__).parent / "data" / "signatures.yaml").read_text())
    mutate(data)
    with pytest.raises(InvalidParameter, match=msg):
        parse_catalog(data)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="k3snb")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_classify_text_and_json(capsys):
    path = str(LOGS / "exp21-p4-kubelet-procsys.log")
    assert _cli(["classify", path]) == 0
    out, err = capsys.readouterr()
    line21 = [ln for ln in out.splitlines() if ln.startswith("21:")]
    assert line21 and line21[0].startswith("21:S01a,S01b,S01c,S01d,S01e,S02:")
    assert "furthest stage: kubelet started" in err
    assert _cli(["classify", "--json", "--failures-only", path]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in recs] == [21, 24]
    assert recs[0]["ids"] == ["S01a", "S01b", "S01c", "S01d", "S01e", "S02"] and recs[0]["workarounds"] == ["W12"]
    assert recs[0]["text"].startswith("E1123 07:57:44.338272")


def test_cli_classify_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("boot\nfatal error: sync: inconsistent mutex state\n"))
    assert _cli(["classify", "--json", "-"]) == 0
    (rec,) = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert rec["line"] == 2 and rec["ids"] == ["S39"]


def test_cli_bad_path_and_signatures(capsys):
    with pytest.raises(UsageError):
        _cli(["classify", "/no/such/file.log"])
    assert _cli(["signatures", "--json"]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(recs) == len(ALL) and recs[0]["id"] == ALL[0].id


# --- the real CLI, hostile input, streaming limits (issue 12) ----------------------------------------------

def k3snb_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, timeout=120,
                          input=stdin if stdin is not None else b"")


def _one_error(r: subprocess.CompletedProcess, code: int, needle: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert "Traceback" not in err and err.count("error:") == 1 and err.count("  fix: ") == 1, err
    assert needle in err.splitlines()[0], err


def test_cli_classifies_several_files_with_cause_and_fix(tmp_path):
    a, b = LOGS / "exp21-p4-kubelet-procsys.log", LOGS / "exp16-sandbox-cgroup.log"
    r = k3snb_cli("classify", str(a), str(b))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert f"{a}:21:S01a,S01b,S01c,S01d,S01e,S02: " in out and f"{b}:18:S20,G01: " in out
    s02 = CAT.get("S02")
    block = out[out.index("  S02 ["):]
    assert s02.title in block.splitlines()[0] and f"cause: {s02.root_cause}" in block
    assert "fix:   W12: fake-procsys" in block  # the W id, the kit workaround that implements it
    assert "W24 (research only" in out
    assert r.stderr.decode().count("lines, furthest stage") == 2
    recs = [json.loads(ln) for ln in k3snb_cli("classify", "--json", str(a), str(b)).stdout.splitlines()]
    assert {rec["file"] for rec in recs} == {str(a), str(b)}


def test_cli_corrupt_gzip_and_unreadable_files_are_one_error(tmp_path):
    text = (LOGS / "exp21-p4-kubelet-procsys.log").read_bytes()
    (tmp_path / "junk.gz").write_bytes(b"not gzip at all")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(text * 50)[:300])
    _one_error(k3snb_cli("classify", str(tmp_path / "junk.gz")), 2, "is not a valid gzip file")
    _one_error(k3snb_cli("classify", str(tmp_path / "cut.gz")), 2, "is not a valid gzip file")
    # unreadable even for root: reading /proc/self/mem at offset 0 fails with EIO
    _one_error(k3snb_cli("classify", "/proc/self/mem"), 2, "/proc/self/mem cannot be read")
    _one_error(k3snb_cli("classify", str(LOGS / "exp21-p4-kubelet-procsys.log"), str(tmp_path / "nope.log")),
               2, "does not exist")
    with pytest.raises(UsageError, match="not a valid gzip file"):
        k3snb.classify(tmp_path / "cut.gz")


def test_cli_does_not_echo_terminal_escapes(tmp_path):
    s39 = CAT.get("S39").examples[0]
    evil = f"\x1b]0;owned title\x07\x1b[2J\x1b[31m{s39}\x9b31m\u202e\n"
    log = tmp_path / "evil.log"
    log.write_text(evil)
    for args in (["classify", str(log)], ["classify", "--json", str(log)], ["classify", "-"]):
        r = k3snb_cli(*args, stdin=evil.encode())
        out = r.stdout.decode()
        assert r.returncode == 0 and "S39" in out, r.stderr
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), repr(out)
    assert "\\x1b]0;owned title\\x07" in k3snb_cli("classify", str(log)).stdout.decode()
    # the library keeps the line as it was
    assert k3snb.classify(log).matches[0]["text"] == evil.rstrip("\n")


def test_chunk_and_window_seams_do_not_change_results(monkeypatch):
    from k3snb.signatures import _classify as mod

    rng = random.Random(11)
    exs = [e for s in ALL for e in s.examples]
    lines = []
    for _ in range(400):
        e = rng.choice(exs)
        pad = "x" * rng.choice([0, 3, 50, 700])
        lines.append(rng.choice([e, pad + e, e + pad, f'msg="{_escape(e)}" {pad}']))
    text = "\n".join(lines) + "\nno newline at the end " + exs[0]
    want = [(m["line"], m["id"]) for m in k3snb.classify(text).matches]
    assert len(want) > 400
    # tiny chunks split lines everywhere; tiny windows turn the padded lines into "huge" ones
    monkeypatch.setattr(mod, "_CHUNK", 97)
    assert [(m["line"], m["id"]) for m in k3snb.classify(text).matches] == want
    monkeypatch.setattr(mod, "_MAX_LINE", 600)
    monkeypatch.setattr(mod, "_OVERLAP", 400)
    monkeypatch.setattr(mod, "_MAX_TEXT", 300)
    got = k3snb.classify(text)
    assert [(m["line"], m["id"]) for m in got.matches] == want
    assert got.lines == len(lines) + 1


def test_huge_single_line_streams_in_bounded_memory(tmp_path):
    """A 96 MiB line holding two signatures: both found, peak memory far below the line's size."""
    s39, s06 = CAT.get("S39").examples[0], CAT.get("S06").examples[0]
    log = tmp_path / "huge.log"
    with open(log, "wb") as f:
        f.write(b"first line\n")
        for i in range(96):
            f.write(b"y" * (1 << 20))
            if i == 40:
                f.write(s39.encode())
        f.write(b" " + s06.encode() + b"\nlast line\n")
    code = ("import resource, k3snb; k3snb.classify('warm up'); "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"r = k3snb.classify({str(log)!r}); "
            "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base; "
            "print(r.lines, sorted({m['id'] for m in r.matches if m['line'] == 2}), "
            "max(len(m['text']) for m in r.matches), grew // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    grew_mib = int(out.split()[-1])
    assert out.startswith("3 ") and "'S06'" in out and "'S39'" in out, out
    assert int(out.split()[-2]) <= (64 << 10) + 2  # the text kept is the part around the match (+ 2 "…")
    assert grew_mib < 64, f"peak memory grew by {grew_mib} MiB for a 96 MiB line"


def test_signatures_without_needles_are_tested_on_every_line():
    import yaml

    from k3snb.signatures._classify import _Matcher

    data = yaml.safe_load((Path(k3snb.__file__).parent / "data" / "signatures.yaml").read_text())
    data["signatures"].append({**data["signatures"][0], "id": "X1", "pattern": "(?i)cannot MOUNT thing",
                               "examples": ["Cannot mount thing"]})
    data["signatures"].append({**data["signatures"][0], "id": "X2", "pattern": r"^\d+$", "examples": ["42"]})
    cat = parse_catalog(data)
    m = _Matcher(list(cat.signatures))
    hits = [(li, s.id) for li, _, s in m.scan(b"x\nCANNOT mount THING here\n42\nfatal error: sync: inconsistent "
                                                 b"mutex state\n")[0]]
    assert (1, "X1") in hits and (2, "X2") in hits and (3, "S39") in hits
    assert not [h for h in hits if h[0] == 0]
