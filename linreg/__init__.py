"""Linear regression from scratch in PyTorch, as in Dive into Deep Learning, made correct.

Modules: `data` (synthetic_data, data_iter), `model` (linreg, init_params), `loss`
(squared_loss), `optim` (sgd), `train` (train), `accumulate`, `concise` (the torch oracle),
`pitfalls` (the catalogue of wrong variants) and `checks` (the properties, as functions).
"""

__version__ = "0.1.0"
