"""Installs d2mask; `pip install -e ".[dev,export]"` is the whole set-up."""
from setuptools import find_packages, setup

setup(
    name="d2mask",
    version="0.1.0",
    description="A Detectron2-style research framework for Faster R-CNN and Mask R-CNN on PyTorch",
    python_requires=">=3.10",
    # The repository's configs/ ship as d2mask/model_zoo/configs/ (d2mask.model_zoo.get_config_file);
    # a source checkout reads configs/ itself, so no copy or symlink is needed there.
    packages=find_packages(include=["d2mask", "d2mask.*"]) + ["d2mask.model_zoo.configs"],
    package_dir={"d2mask.model_zoo.configs": "configs"},
    package_data={"d2mask.model_zoo.configs": ["**/*.yaml", "**/*.py"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "omegaconf>=2.3",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",  # COCOEvaluator's AP, ~10x faster than pycocotools with the same numbers
        "opencv-python-headless>=4.8",
        "Pillow>=9.1",  # reads image headers before decoding (d2mask.data.detection_utils)
        "termcolor>=2.0",
        "matplotlib>=3.7",
        "numpy",
        "pyyaml>=6.0",
        "tabulate",
        "tqdm",
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6.80", "shapely>=2.0"],
        # Cityscapes' polygon files (load_cityscapes_instances(..., from_json=True))
        "cityscapes": ["shapely>=2.0"],
        "tensorboard": ["tensorboard>=2.12"],
        # ONNX export and running ONNX artefacts (docs/deployment.md)
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
    },
)
