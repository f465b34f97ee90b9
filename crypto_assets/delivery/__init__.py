"""Alert delivery: anomalies from `crypto_alerts` and failed Dagster runs to webhooks.

payloads (what a receiver gets), sender (one HTTP delivery with retries), ledger (what was
delivered, per webhook, so nothing is delivered twice), consumer (the `crypto-assets alerts`
loop), run_failures (the run-failure sensor's message). See ledger.py for the guarantee.
"""
