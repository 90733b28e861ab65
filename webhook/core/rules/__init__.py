"""The rules a GPU workload is held to, one module each, in the order users read them:

    gpus.pod_size, labels, templates, runtime, grace  how the object is written
    gpus.gpu_types, gate, gpus.allowed_types         what it costs and what it runs on
    limits                                           quotas and budgets

Each is a function from a `context.Context` to a `context.Finding`; `webhook.core.decide`
runs them and `webhook.core.verdict` turns what they found into the answer.
"""
