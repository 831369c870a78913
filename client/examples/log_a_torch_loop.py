"""Log a training loop that runs outside orlab (here a small PyTorch regression; the same five
lines go into a verl or TRL script) into orlab through the Python client.

    export ORLAB_URL=http://127.0.0.1:8000 ORLAB_TOKEN=...   # python manage.py drf_create_token demo
    python client/examples/log_a_torch_loop.py --project 1

If orlab goes down while it trains, points are spooled to ~/.orlab/spool and sent when it is back
(or later with `orlab-client sync`)."""

import argparse
from pathlib import Path

import torch

from orlab_client import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(1024, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(1024, 1)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)

    client = Client()  # ORLAB_URL / ORLAB_TOKEN from the environment
    with client.create_run(
        project=args.project, name="torch regression", config=vars(args), tags=["example"]
    ) as run:
        for step in range(args.steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
            opt.step()
            run.log(step, {"train/loss": loss.item(), "train/grad_norm": grad_norm.item()})
            if step % 500 == 0:
                folder = Path(f"/tmp/regression/step-{step}")  # uploaded into orlab's artifact store
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), folder / "model.pt")
                run.log_checkpoint(step, folder, {"train/loss": loss.item()})
    print(f"logged run {run.id}")


if __name__ == "__main__":
    main()
