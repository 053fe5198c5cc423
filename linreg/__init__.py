"""Linear regression from scratch in PyTorch, as in Dive into Deep Learning, made correct, and
the catalogue of training-loop pitfalls that checks it and your own code.

The map. Folders are layers; a module imports only its own layer and those before it
(tests/test_layers.py walks the imports and checks this):

0. The book's code, correct, what a d2l reader opens: `data` (synthetic_data, data_iter),
   `model` (linreg, init_params), `loss` (squared_loss), `optim` (sgd), `train`, `accumulate`,
   `concise` (nn.Linear + nn.MSELoss + optim.SGD: the oracle), `distributed`, `config`;
   `_book` (its constants), `_validate` (the argument checks), `_plain` (strict JSON).
1. `checks`: the generic checks the properties are built from, CheckFailed, the tolerance.
2. `kinds/`: each kind of target, how it is called and watched, knowing no pitfall; `KINDS`, the
   registry. `kinds/training_loop/` runs any PyTorch loop; `kinds/frameworks/` a framework's
   own Trainer as such a loop, one module per framework. `testing.strategies` (the examples
   the properties draw) sits here too.
3. `pitfalls/`: the catalogue, one module per pitfall (its text, wrong variants, properties and
   demo); `_kit` what they share, `_live` and `_render` the catalogue shown live and its report,
   `_ddp`/`_spawn` the DDP runs only the catalogue starts.
4. `audit/`: the catalogue run against your code: one function per kind, `Report` in all its
   forms (`audit.report`), how the properties run (`audit.runner`).
5. The faces, which import no other face: `cli/` (python -m linreg: one module per command,
   train, pitfalls, audit) and `testing.plugin` (pytest --pitfalls-audit).

Importing `linreg` imports nothing else; `linreg.audit` and `linreg.testing` need Hypothesis.
"""

__version__ = "0.1.0"
