"""`scriptorium bench` and `scriptorium eval`: WER, speed and QoI of Scriptorium against faster-whisper.

A user feature outside the product's core: neither engine/ nor runner's catalog, queue or web import it."""
