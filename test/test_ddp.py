"""`torchrun` trains with DistributedDataParallel (2 CPU processes, gloo)."""
import json
import subprocess
import sys

from conftest import TINY_YAML

from cde_ros.synthetic.record import RecordConfig, record_synthetic


def test_torchrun_two_processes(tmp_path):
    bag = tmp_path / "bag"
    record_synthetic(bag, RecordConfig(storage="mcap", events=10, size=(48, 48)), progress=False)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "cde_ros.cli", "train", str(bag), "--out", str(tmp_path / "model"), "--config",
         str(tmp_path / "tiny.yaml"), "--cache-dir", str(tmp_path / "cache"), "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["training"]["world_size"] == 2 and len(meta["training"]["history"]) == 2
    assert proc.stderr.count("epoch 2/2") == 1  # only rank 0 logs and writes
