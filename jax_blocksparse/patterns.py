"""Block layouts: random, small-world and scale-free masks, and block-magnitude pruning.

Every mask function returns a boolean numpy array ready for :class:`jax_blocksparse.Layout`
and is deterministic for a given ``seed``. The graph generators use networkx, imported only
inside the functions that need it, so ``import jax_blocksparse`` stays light.
"""
from __future__ import annotations

import numpy as np

from .layout import Layout

__all__ = ["random", "watts_strogatz", "barabasi_albert", "from_dense", "average_path_length"]


def _networkx():
    try:
        import networkx
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("jax_blocksparse.patterns needs networkx for graph layouts: "
                          "pip install networkx") from err
    return networkx


def _graph_mask(graph, n: int) -> np.ndarray:
    mask = np.zeros((n, n), bool)
    edges = np.array(list(graph.edges()), dtype=np.int64).reshape(-1, 2)
    mask[edges[:, 0], edges[:, 1]] = True
    mask[edges[:, 1], edges[:, 0]] = True
    np.fill_diagonal(mask, True)
    return mask


def random(rows: int, cols: int, density: float, seed: int = 0) -> np.ndarray:
    """A ``(rows, cols)`` mask with exactly ``max(1, round(density * rows * cols))`` blocks set,
    chosen uniformly without replacement."""
    if rows < 1 or cols < 1:
        raise ValueError(f"random: rows and cols must be positive; got {rows}, {cols}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"random: density must be in (0, 1]; got {density}")
    total = rows * cols
    count = max(1, int(round(density * total)))
    chosen = np.random.default_rng(seed).choice(total, size=count, replace=False)
    mask = np.zeros(total, bool)
    mask[chosen] = True
    return mask.reshape(rows, cols)


def watts_strogatz(n: int, k: int, p: float, seed: int = 0) -> np.ndarray:
    """Symmetric ``(n, n)`` Watts-Strogatz small-world mask with self-connections.

    A ring where each block connects to its ``k`` nearest neighbours (``k // 2`` on each side),
    each edge rewired with probability ``p`` (``networkx.watts_strogatz_graph``). Density is
    about ``(k + 1) / n``.
    """
    if not 0 <= k < n:
        raise ValueError(f"watts_strogatz: need 0 <= k < n; got n={n}, k={k}")
    graph = _networkx().watts_strogatz_graph(n, k, p, seed=seed)
    return _graph_mask(graph, n)


def barabasi_albert(n: int, m: int, seed: int = 0) -> np.ndarray:
    """Symmetric ``(n, n)`` Barabasi-Albert scale-free mask with self-connections.

    Each new block attaches to ``m`` existing blocks by preferential attachment
    (``networkx.barabasi_albert_graph``); a few hub rows/columns end up dense.
    """
    if not 1 <= m < n:
        raise ValueError(f"barabasi_albert: need 1 <= m < n; got n={n}, m={m}")
    graph = _networkx().barabasi_albert_graph(n, m, seed=seed)
    return _graph_mask(graph, n)


def block_norms(W, block_size: int) -> np.ndarray:
    """The ``(C // bs, N // bs)`` Frobenius norms of the blocks of a ``(C, N)`` matrix."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"expected a 2-D matrix; got shape {W.shape}")
    rows, cols = W.shape
    if rows % block_size or cols % block_size:
        raise ValueError(f"matrix shape {W.shape} is not a multiple of block_size={block_size}")
    blocks = W.reshape(rows // block_size, block_size, cols // block_size, block_size)
    return np.sqrt(np.square(blocks).sum(axis=(1, 3)))


def from_dense(W, block_size: int, density: float | None = None, threshold: float | None = None):
    """Prune a dense ``(C, N)`` matrix to its largest blocks; returns ``(Layout, w)``.

    Blocks are ranked by Frobenius norm. Give exactly one of

    * ``density``: keep the ``max(1, round(density * n_blocks))`` largest blocks (ties go to the
      earlier block in row-major order), or
    * ``threshold``: keep every block whose norm is ``>= threshold``.

    At least one block (the largest) is always kept. ``w`` holds the kept blocks of ``W``
    unchanged, in ``W``'s dtype, so ``layout.todense(w)`` is ``W`` with the pruned blocks zeroed.
    """
    if (density is None) == (threshold is None):
        raise ValueError("from_dense: give exactly one of density= or threshold=")
    Layout(np.ones((1, 1), bool), block_size)  # validates block_size with the usual message
    norms = block_norms(W, block_size)
    flat = norms.reshape(-1)
    if density is not None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"from_dense: density must be in (0, 1]; got {density}")
        count = max(1, int(round(density * flat.size)))
        keep = np.argsort(-flat, kind="stable")[:count]
        mask = np.zeros(flat.size, bool)
        mask[keep] = True
        mask = mask.reshape(norms.shape)
    else:
        mask = norms >= threshold
        if not mask.any():
            mask.reshape(-1)[int(np.argmax(flat))] = True
    layout = Layout(mask, block_size)
    import jax.numpy as jnp

    return layout, layout.fromdense(jnp.asarray(W))


def average_path_length(mask) -> float:
    """Average shortest-path length between blocks of the block graph of ``mask``.

    The mask is read as an undirected graph on ``max(rows, cols)`` nodes: block ``(i, j)`` is an
    edge between nodes ``i`` and ``j`` (so ``mask | mask.T`` for square masks; self-connections
    are ignored). If the graph is disconnected, the length is that of its **largest connected
    component** (networkx leaves it undefined otherwise). A single node gives 0.
    """
    nx = _networkx()
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"average_path_length: mask must be 2-D; got shape {mask.shape}")
    n = max(mask.shape)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    rows, cols = np.nonzero(mask)
    graph.add_edges_from((int(i), int(j)) for i, j in zip(rows, cols) if i != j)
    if not nx.is_connected(graph):
        graph = graph.subgraph(max(nx.connected_components(graph), key=len))
    if graph.number_of_nodes() < 2:
        return 0.0
    return float(nx.average_shortest_path_length(graph))
