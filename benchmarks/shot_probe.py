"""How much of a world's selection a shot-by-shot scorer learns: the reference a trailer generator's F1
is read against when the world's own rule (`ceiling.json`) sees what features do not show.

    python benchmarks/shot_probe.py --data ROOT [--epochs 12] [--profile K]

A linear scorer and a small MLP (256 hidden units, dropout 0.2) read each shot's local features (its
unit feature, minus the movie's mean, minus the mean of the 9 shots around it, its cosines with the
shots beside it, its novelty against the 5 before, its place in the film; with `--profile K` also its
cosines with the shots 2 to K before and after it, as the context branch's `context_profile`), are
trained by binary cross-entropy on the train split (minibatches of 512, AdamW), and pick each test
movie's top-J shots; every third epoch prints their test F1 (tolerance 0, `ssmp_infer.metrics`). No
trailer order, no held-out selection: a probe, not a generator.
"""

import argparse

import torch
import torch.nn.functional as F

from ssmp_infer.context_prior import similarity_profile
from ssmp_infer.data import load_split
from ssmp_infer.metrics import score_trailer, summarise


def shot_features(movie, profile: int = 0) -> torch.Tensor:
    u = F.normalize(torch.from_numpy(movie).float(), dim=-1)
    n = len(u)
    local = F.avg_pool1d(u.T[None], 9, 1, 4, count_include_pad=False)[0].T
    before = (u * torch.cat([u[:1], u[:-1]])).sum(-1, keepdim=True)
    after = (u * torch.cat([u[1:], u[-1:]])).sum(-1, keepdim=True)
    sims = u @ u.T
    novelty = torch.stack([1 - sims[i, max(0, i - 5):i].max() if i else torch.tensor(0.0) for i in range(n)])
    place = torch.arange(n, dtype=torch.float32) / n
    parts = [u, u - u.mean(0), u - local, before, after, novelty[:, None], place[:, None]]
    if profile:
        parts.append(similarity_profile(u[None], torch.ones(1, n, dtype=torch.bool), torch.arange(n), profile)[0])
    return torch.cat(parts, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--profile", type=int, default=0, help="also read cosines with the shots 2 to K each side (0: no)")
    args = ap.parse_args()
    torch.manual_seed(0)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    x = torch.cat([shot_features(e.movie, args.profile) for e in train])
    y = torch.cat([torch.zeros(len(e.movie)).index_fill_(0, torch.from_numpy(e.targets), 1.0) for e in train])
    test_x = [shot_features(e.movie, args.profile) for e in test]

    def test_f1(net) -> float:
        with torch.no_grad():
            picks = [net(f).squeeze(-1).topk(len(e.targets)).indices.sort().values for e, f in zip(test, test_x)]
        return summarise([score_trailer(p.tolist(), e.targets.tolist()) for p, e in zip(picks, test)])["f1"]

    width = x.shape[1]
    nets = {"linear": torch.nn.Linear(width, 1),
            "mlp": torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(256, 1))}
    for name, net in nets.items():
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        for epoch in range(args.epochs):
            net.train()
            for idx in torch.randperm(len(x)).split(512):
                opt.zero_grad()
                F.binary_cross_entropy_with_logits(net(x[idx]).squeeze(-1), y[idx]).backward()
                opt.step()
            net.eval()
            if epoch % 3 == 2:
                print(f"{name} epoch {epoch + 1}: test top-J F1 {test_f1(net):.3f}", flush=True)


if __name__ == "__main__":
    main()
