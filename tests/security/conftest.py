"""Attacks on real nodes, heads, workers and banks over real sockets.

Each test module here reproduces one hostile behaviour (a peer, another local
user, a man in the middle) and asserts the refusal and the bounds on CPU time,
memory and threads. SECURITY.md lists every module with what stops its attack.
"""
