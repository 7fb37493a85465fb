"""Which code and host a study's runs used (study/provenance.py): the report's lines and the `host:` requirement."""

import pytest


def test_report_says_when_runs_used_different_code():
    from pact_cotrain.study.provenance import code_version_lines

    def run(seed, start, end, dirty=False):
        return {"seed": seed, "done": {"git_at_start": {"commit": start, "dirty": False},
                                       "git": {"commit": end, "dirty": dirty}}}

    same = {"pact": [run(0, "a" * 40, "a" * 40)], "sft": [run(0, "a" * 40, "a" * 40)]}
    assert code_version_lines(same) == [f"Code: every run used commit {'a' * 10}.", ""]
    mixed = {"pact": [run(0, "a" * 40, "a" * 40), run(1, "c" * 40, "b" * 40)], "sft": [run(0, "b" * 40, "b" * 40, True)]}
    text = "\n".join(code_version_lines(mixed))
    assert "more than one version" in text and f"- {'c' * 10} then {'b' * 10}: pact:1" in text
    assert f"- {'b' * 10} (uncommitted changes): sft:0" in text


def test_report_names_each_runs_host():
    """A study whose runs ran on CPUs with and without native bf16 (where `auto` precision differs) says so,
    run by run; runs from before the record are listed as such."""
    from pact_cotrain.study.provenance import host_lines

    avx2 = {"cpu": "AMD EPYC", "native_bf16": False, "gpu": None}
    bf16 = {"cpu": "Intel Xeon", "native_bf16": True, "gpu": None}
    same = {"pact": [{"seed": 0, "done": {"host": avx2}}], "sft": [{"seed": 0, "done": {"host": avx2}}]}
    assert host_lines(same) == ["Host: every run on AMD EPYC (native bf16: no).", ""]
    mixed = {"pact": [{"seed": 0, "done": {}}], "grpo": [{"seed": 0, "done": {"host": avx2}},
                                                          {"seed": 1, "done": {"host": bf16}}]}
    text = "\n".join(host_lines(mixed))
    assert "more than one host" in text
    assert "- not recorded: pact:0" in text and "- AMD EPYC (native bf16: no): grpo:0" in text
    assert "- Intel Xeon (native bf16: yes): grpo:1" in text
    assert host_lines({"pact": [{"seed": 0, "done": {}}]}) == []  # a study from before the record: nothing
    gpu = {"pact": [{"seed": 0, "done": {"host": {**bf16, "gpu": "NVIDIA H100"}}}]}
    assert host_lines(gpu) == ["Host: every run on Intel Xeon (native bf16: yes), GPU NVIDIA H100.", ""]


def test_a_study_with_a_host_requirement_starts_no_run_on_another_host(tmp_path, monkeypatch):
    """`host: {native_bf16: true}` (study v2b: v2 trained with bf16 autocast, which `auto` picks only on a
    native-bf16 CPU): on an AVX2-only host the study refuses in one line, before writing anything."""
    from pact_cotrain.errors import UserError
    from pact_cotrain.study import provenance, runner

    avx2 = {"cpu": "AMD EPYC", "native_bf16": False, "gpu": None}
    provenance.check_host({"host": {"native_bf16": False}}, "s.yaml", avx2)
    provenance.check_host({}, "s.yaml", avx2)
    with pytest.raises(UserError, match=r"s.yaml: `host:` does not match this host \(AMD EPYC\): native_bf16: False "
                                        r"\(required True\)"):
        provenance.check_host({"host": {"native_bf16": True}}, "s.yaml", avx2)
    with pytest.raises(UserError, match="avx: not a host field"):
        provenance.check_host({"host": {"avx": 512}}, "s.yaml", avx2)
    study = tmp_path / "study.yaml"
    study.write_text("host: {native_bf16: true}\nmethods: {vanilla: null}\n")
    monkeypatch.setattr(provenance, "host_info", lambda: avx2)
    with pytest.raises(UserError, match="no run started"):
        runner.run_study(str(study), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
