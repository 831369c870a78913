"""The delivery task, on the ``control`` queue (sent by name from webapp.notify.sender). Registered
with the worker through NotifyConfig.ready, which imports this module once Django is set up."""

from workers.celery import app


@app.task(name="webapp.notify.tasks.send_delivery", ignore_result=True)
def send_delivery(delivery_id: int) -> str:
    from webapp.notify import sender

    return sender.send(delivery_id)
