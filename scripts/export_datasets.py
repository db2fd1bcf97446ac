"""Write real data in the pipeline's other formats (demonstrations in docs/experiment.md).

    python scripts/export_datasets.py images [--data-dir DIR] [--out datasets/fashion-mnist-images]
        Fashion-MNIST as an image folder: train/<class>/<index>.png, test/<class>/<index>.png, and
        labels.txt with the class folders in Fashion-MNIST's label order. File names keep the IDX order
        and PNG is lossless, so the reader returns the very arrays of the IDX files.
    python scripts/export_datasets.py digits [--out datasets/digits/digits.npz]
        scikit-learn's bundled handwritten digits (1,797 real 8x8 images, inside the wheel: no
        download) as NPZ in Keras' layout, a stratified 25% test share (random_state 0), uint8
        pixels 0..16, and labels.txt naming the classes "0".."9".

Each writes into a temporary sibling and renames it into place: a failed export leaves nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def folder_name(class_name: str) -> str:
    return class_name.replace("/", "_")  # "T-shirt/top": a path separator cannot name a folder


def export_images(data_dir: str | None, out: Path) -> None:
    from PIL import Image

    from include.data import load_fashion_mnist

    ds = load_fashion_mnist(data_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    names = [folder_name(c) for c in ds.class_names]
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        for name in names:
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(img, mode="L").save(tmp / split / names[label] / f"{i:05d}.png")
    (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    _replace(tmp, out)
    print(f"wrote {len(ds.y_train)} + {len(ds.y_test)} PNG images of {ds.name} to {out}")


def export_digits(out: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.uint8)  # 8x8, whole numbers 0..16
    y = digits.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    tmp = out.parent.with_name(f".{out.parent.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    np.savez(tmp / out.name, x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in digits.target_names))
    _replace(tmp, out.parent)
    print(f"wrote {len(tr)} train + {len(te)} test 8x8 digit images to {out}")


def _replace(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    img = sub.add_parser("images", help="Fashion-MNIST as an image folder")
    img.add_argument("--data-dir", default=None, help="IDX folder (default: the pipeline's search)")
    img.add_argument("--out", type=Path, default=ROOT / "datasets" / "fashion-mnist-images")
    dig = sub.add_parser("digits", help="scikit-learn's digits as NPZ")
    dig.add_argument("--out", type=Path, default=ROOT / "datasets" / "digits" / "digits.npz")
    args = p.parse_args()
    if args.what == "images":
        export_images(args.data_dir, args.out.resolve())
    else:
        export_digits(args.out.resolve())


if __name__ == "__main__":
    main()
