#!/usr/bin/python3
"""Reference values for tests/test_optim.c from torch.optim.AdamW and torch.optim.SGD.

Three steps on two small parameters, w (weight decay) and b (none), with given gradients and a
learning rate that changes each step. Prints the C arrays that test_optim.c holds in its
`torch_*` tables; to regenerate them run, with Debian's python3-torch:

    /usr/bin/python3 tests/optim_reference.py

and paste the output over the tables.
"""
import torch

W0 = [0.5, -1.0, 2.0, 0.25]
B0 = [0.1, -0.2]
GW = [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.1, 0.2], [0.3, 0.3, -0.1, -0.2]]
GB = [[1.0, -0.5], [0.5, 0.25], [-1.0, 2.0]]
LRS = [1e-2, 5e-3, 2e-3]
WD = 0.1


def run(make, dtype):
    w = torch.tensor(W0, dtype=dtype, requires_grad=True)
    b = torch.tensor(B0, dtype=dtype, requires_grad=True)
    opt = make([{"params": [w], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}])
    for t in range(3):
        for group in opt.param_groups:
            group["lr"] = LRS[t]
        w.grad = torch.tensor(GW[t], dtype=dtype)
        b.grad = torch.tensor(GB[t], dtype=dtype)
        opt.step()
    return w.detach().tolist() + b.detach().tolist()


def adamw(params):
    return torch.optim.AdamW(params, lr=LRS[0], betas=(0.9, 0.95), eps=1e-8, foreach=False)


def sgd(params):
    return torch.optim.SGD(params, lr=LRS[0], momentum=0.9, foreach=False)


def c_array(name, values):
    rows = [", ".join("%.17g" % v for v in values[i:i + 3]) for i in range(0, len(values), 3)]
    return "static const double %s[6] = {\n    %s};" % (name, ",\n    ".join(rows))


print("/* torch %s, tests/optim_reference.py */" % torch.__version__)
print(c_array("torch_adamw_f64", run(adamw, torch.float64)))
print(c_array("torch_adamw_f32", run(adamw, torch.float32)))
print(c_array("torch_sgd_f64", run(sgd, torch.float64)))
print(c_array("torch_sgd_f32", run(sgd, torch.float32)))
