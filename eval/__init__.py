"""The paper's metric suite, label-grounded accuracy and baseline runs."""
