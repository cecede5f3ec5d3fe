"""The core every stage stands on: typed config, atomic io, model resolution, how a command starts and ends,
report HTML, W&B setup, CPU heap tuning. It imports no stage and no pipeline module (docs/ARCHITECTURE.md)."""
