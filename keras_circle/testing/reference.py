"""Slow float64 references for tests and benchmarks, written from the paper.

Every function loops over explicit anchors and pairs in NumPy float64 and
imports nothing of keras_circle, so that tests and `benchmarks/accuracy.py`
check the losses against code written independently of them. Slow: small
batches only. The
gradients of the stop-gradient form follow the paper's Eq. 9/10 directly
(`dL/ds_n^j = Z * softmax_j * gamma * a_n^j`, `dL/ds_p^i = -Z * softmax_i *
gamma * a_p^i`, `Z = 1 - exp(-L)`), then the chain rule through the cosine and
the L2 normalisation. Full-gradient forms are checked by central differences of
the float64 value.
"""

import math

import numpy as np


def logsumexp(values):
    values = np.asarray(values, dtype=np.float64)
    top = values.max()
    return top + math.log(np.exp(values - top).sum())


def softmax(values):
    values = np.asarray(values, dtype=np.float64)
    e = np.exp(values - values.max())
    return e / e.sum()


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def normalize(e):
    e = np.asarray(e, dtype=np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def circle_anchor(s_p, s_n, gamma, margin):
    """Eq. 6 for one anchor: value and dL/ds for its positives and negatives."""
    a_p = np.maximum(1 + margin - s_p, 0.0)
    a_n = np.maximum(s_n + margin, 0.0)
    logit_p = -gamma * a_p * (s_p - (1 - margin))
    logit_n = gamma * a_n * (s_n - margin)
    x = logsumexp(logit_n) + logsumexp(logit_p)
    loss = softplus(x)
    z = 1.0 - math.exp(-loss)
    grad_p = -z * softmax(logit_p) * gamma * a_p  # Eq. 10
    grad_n = z * softmax(logit_n) * gamma * a_n  # Eq. 9
    return loss, grad_p, grad_n


def pairwise_circle(labels, embeddings, gamma, margin):
    """Per-anchor losses, validity, and the gradient of the mean over valid anchors."""
    labels = np.asarray(labels).reshape(-1)
    e = np.asarray(embeddings, dtype=np.float64)
    u = normalize(e)
    b = len(labels)
    losses, valid = np.zeros(b), np.zeros(b, dtype=bool)
    grad_s = np.zeros((b, b))
    for i in range(b):
        pos = [j for j in range(b) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(b) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        s_p = np.array([u[i] @ u[j] for j in pos])
        s_n = np.array([u[i] @ u[j] for j in neg])
        losses[i], g_p, g_n = circle_anchor(s_p, s_n, gamma, margin)
        valid[i] = True
        for j, g in zip(pos, g_p, strict=True):
            grad_s[i, j] += g
        for j, g in zip(neg, g_n, strict=True):
            grad_s[i, j] += g
    count = max(valid.sum(), 1)
    grad_s /= count
    return losses, valid, _chain_to_embeddings(grad_s, u, e, u)


def _chain_to_embeddings(grad_s, u_a, e_a, u_b, e_b=None):
    """Backprop dL/ds (s = u_a u_b^T) to the raw embeddings (symmetric if e_b None)."""
    grad_u_a = grad_s @ u_b
    grad_u_b = grad_s.T @ u_a
    if e_b is None:
        return _through_normalize(grad_u_a + grad_u_b, u_a, e_a)
    return _through_normalize(grad_u_a, u_a, e_a), _through_normalize(
        grad_u_b, u_b, e_b
    )


def _through_normalize(grad_u, u, e):
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return (grad_u - u * np.sum(grad_u * u, axis=1, keepdims=True)) / norms


def class_circle(labels, cosine, gamma, margin):
    """Per-sample losses and d(mean loss)/d(cosine) from Eq. 6 with K = 1."""
    labels = np.asarray(labels).reshape(-1)
    s = np.asarray(cosine, dtype=np.float64)
    b, c = s.shape
    losses = np.zeros(b)
    grad = np.zeros_like(s)
    for i in range(b):
        y = labels[i]
        others = [j for j in range(c) if j != y]
        if not others:
            continue
        loss, g_p, g_n = circle_anchor(s[i, [y]], s[i, others], gamma, margin)
        losses[i] = loss
        grad[i, y] = g_p[0]
        grad[i, others] = g_n
    return losses, grad / b


def unified_pairs(labels, embeddings, gamma, margin):
    """Eq. 1 per anchor, summing exp over every (positive, negative) pair."""
    labels = np.asarray(labels).reshape(-1)
    u = normalize(embeddings)
    b = len(labels)
    out = np.zeros(b)
    for i in range(b):
        terms = [
            gamma * (u[i] @ u[n] - u[i] @ u[p] + margin)
            for p in range(b)
            if p != i and labels[p] == labels[i]
            for n in range(b)
            if labels[n] != labels[i]
        ]
        if terms:
            out[i] = softplus(logsumexp(terms))
    return out


def margin_softmax(labels, cosine, target_fn, gamma):
    """Cross-entropy with `gamma * target_fn(s_y)` for the label, `gamma * s` else."""
    labels = np.asarray(labels).reshape(-1)
    s = np.asarray(cosine, dtype=np.float64)
    out = np.zeros(len(labels))
    for i, y in enumerate(labels):
        logits = gamma * s[i].copy()
        logits[y] = gamma * target_fn(s[i, y])
        out[i] = logsumexp(logits) - logits[y]
    return out


def triplet(labels, embeddings, margin, mining, distance="l2"):
    """Per-anchor triplet loss by explicit loops over (anchor, positive, negative)."""
    labels = np.asarray(labels).reshape(-1)
    e = np.asarray(embeddings, dtype=np.float64)
    b = len(labels)

    def dist(i, j):
        diff = e[i] - e[j]
        if distance == "squared_l2":
            return diff @ diff
        if distance == "angular":
            return 1 - e[i] @ e[j] / np.linalg.norm(e[i]) / np.linalg.norm(e[j])
        return math.sqrt(diff @ diff)

    out = np.zeros(b)
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            out[a] = max(
                max(dist(a, p) for p in pos) - min(dist(a, n) for n in neg) + margin, 0
            )
            continue
        hinges = []
        for p in pos:
            d_ap = dist(a, p)
            farther = [dist(a, n) for n in neg if dist(a, n) > d_ap]
            d_an = min(farther) if farther else max(dist(a, n) for n in neg)
            hinges.append(max(d_ap - d_an + margin, 0))
        out[a] = np.mean(hinges)
    return out


def numeric_gradient(fn, x, eps=1e-6):
    """Central differences of a float64 scalar function."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        grad[idx] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad
