import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "edgeffnet.cli", *args], capture_output=True, text=True)


def test_info_prints_table_and_check():
    r = run("info", "b3")
    assert r.returncode == 0, r.stderr
    assert "MBConv6" in r.stdout and "12,233,232" in r.stdout and "2^phi check" in r.stdout


def test_info_json_for_machines():
    r = run("info", "b0,phi=1.5", "--json")
    d = json.loads(r.stdout)
    assert d["params"] > 5_288_548 and d["scaling_check"]["phi"] == 1.5
    assert [row["stage"] for row in d["stages"]] == list(range(1, 10))
    assert d["stages"][0]["resolution"] == d["resolution"]


def test_info_without_spec_lists_presets():
    r = run("info", "--json")
    names = [row["spec"] for row in json.loads(r.stdout)]
    assert names == [f"b{i}" for i in range(8)] + [f"lite{i}" for i in range(5)]


def test_info_help_documents_the_grammar():
    r = run("info", "--help")
    assert "phi=3,only=depth" in r.stdout and "alpha" in r.stdout


def test_bad_spec_one_line_exit_2():
    r = run("info", "b42")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "valid forms" in r.stderr and "Traceback" not in r.stderr


def test_custom_coefficients_warning_on_stderr():
    r = run("info", "phi=1,alpha=2,beta=1.2,gamma=1.2")
    assert r.returncode == 0 and "far from 2" in r.stderr
