"""Linear regression from scratch as the book (d2l) writes it, as functions linreg can audit.

From this folder: `python -m linreg audit loop d2l_style:train` (see the README's "Check your
own code"). The functions are the book's, unchanged but for `train`, which is the book's loop
written as a function of the data, the params and the hyperparameters it is given.
"""

import random

import torch


def data_iter(batch_size, features, labels):
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def linreg(X, w, b):
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def mean_loss(y_hat, y):
    """The per-batch mean many copies write: no reshape of y."""
    return ((y_hat - y) ** 2 / 2).mean()


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train(features, labels, params, *, lr, batch_size, num_epochs):
    w, b = params
    for epoch in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels):
            l = squared_loss(linreg(X, w, b), y)
            l.sum().backward()
            sgd([w, b], lr, batch_size)
