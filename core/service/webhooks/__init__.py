"""Signed webhooks: owners' endpoints, the outbox written beside each job state change, the
loop that posts it (retried, signed with HMAC-SHA256), and the SSRF rule on targets."""
