"""The book's default experiment, as constants (no torch import, so the CLI starts fast)."""

TRUE_W = (2.0, -3.4)
TRUE_B = 4.2
NUM_EXAMPLES = 1000
BATCH_SIZE = 10
LR = 0.03
NUM_EPOCHS = 3
UNEVEN_NUM_EXAMPLES = 1003  # an n with n % BATCH_SIZE = 3: the short last batch shows
