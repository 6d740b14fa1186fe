"""The queue: rq on Redis (embedded or shared), the scanner that feeds it, jobs, and the worker
processes that take them."""
