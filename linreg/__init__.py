"""Linear regression from scratch in PyTorch, as in Dive into Deep Learning, made correct.

Modules: `data` (synthetic_data, data_iter), `model` (linreg, init_params), `loss`
(squared_loss), `optim` (sgd), `train` (train), `accumulate`, `concise` (the torch oracle);
`pitfalls` (the catalogue: one module per pitfall, with its properties and wrong variants),
`targets` (the kinds of target and their registry, KINDS), `audit` (check your own code),
`checks` (the checks the properties are built from) and `cli` (python -m linreg).
"""

__version__ = "0.1.0"
