"""The transactional outbox: a task message is written with the row it is about, in one transaction,
and a sender delivers it to the broker (webapp.outbox.sender). See README "Queues and the run
lifecycle"."""
