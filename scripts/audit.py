"""Memorization audit of any weight generator: your training and generated checkpoints in, the study's verdict out.

python scripts/audit.py train=ckpts/train generated=ckpts/generated model=zoo 'model.arch={name: mlp, hidden: [32, 32]}' task=zoo task.name=mnist1d
python scripts/audit.py train=ckpts/train generated=samples.safetensors generated_key=generated model=timm \
    model.name=resnet18 task=image_folder task.root=data/val 'params=[layer4.1.bn*]' base=ckpts/base.safetensors
(configs/audit/: model=zoo|timm|callable, task=zoo|image_folder|hf|callable; docs/audit.md)
"""

from bias.cli import audit

if __name__ == "__main__":
    audit()
