"""The asyncio engine: schedules steps, runs commands through executors, then checks."""
