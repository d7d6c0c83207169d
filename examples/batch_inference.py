"""Batch inference over a folder of data, with the model's code installed by
a pip runtime environment.

The "model" is a small Python package, `tinymodel`, that this program builds
itself as a wheel (a zip with its metadata, so nothing is downloaded). The
driver does not have it installed: each inference task declares
`runtime_env={"pip": [wheel]}`, so the cluster builds a virtual environment
with it once per node (seeing the cluster's own packages, numpy here) and
runs the tasks there. The data is a folder of .npy batches the program writes
too; one task per file loads its batch, predicts, and returns the labels.

Run:  solray run examples/batch_inference.py
      (on Ray itself: python examples/batch_inference.py)
"""

import base64
import hashlib
import importlib.util
import os
import tempfile
import zipfile

import numpy as np
import ray

MODEL_CODE = '''
import numpy as np

WEIGHTS = np.array([0.5, -0.25, 1.0])


def predict(batch):
    """1 where the weighted sum is positive, else 0."""
    return (batch @ WEIGHTS > 0).astype(np.int64)
'''


def build_wheel(directory: str) -> str:
    """tinymodel-1.0-py3-none-any.whl: the package, its metadata, its RECORD."""
    dist = "tinymodel-1.0.dist-info"
    files = {
        "tinymodel/__init__.py": MODEL_CODE,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tinymodel\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: example\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = os.path.join(directory, "tinymodel-1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def write_batches(directory: str, count: int, rows: int) -> list[str]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"batch_{i:02d}.npy")
        np.save(path, rng.normal(size=(rows, 3)))
        paths.append(path)
    return paths


def main() -> None:
    ray.init(num_cpus=2)
    workdir = tempfile.mkdtemp(prefix="batch-inference-")
    wheel = build_wheel(workdir)
    paths = write_batches(workdir, count=6, rows=1000)
    print(
        f"{len(paths)} batches of 1000 rows; tinymodel installed here: "
        f"{importlib.util.find_spec('tinymodel') is not None}"
    )

    @ray.remote(runtime_env={"pip": [wheel]})
    def infer(path):
        import tinymodel  # installed in this task's environment only

        batch = np.load(path)
        return os.path.basename(path), tinymodel.predict(batch)

    results = dict(ray.get([infer.remote(p) for p in paths]))
    predicted = sum(int(labels.sum()) for labels in results.values())

    # The same model in plain Python on the driver, to check the answers.
    weights = np.array([0.5, -0.25, 1.0])
    expected = sum(int((np.load(p) @ weights > 0).sum()) for p in paths)
    print(f"predicted positives: {predicted} of {len(paths) * 1000}")
    print(f"matches a local computation: {predicted == expected}")
    assert predicted == expected
    print("batch_inference: all checks passed")
    ray.shutdown()


if __name__ == "__main__":
    main()
