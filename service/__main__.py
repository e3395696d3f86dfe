"""`python -m service`: start a worker (the same as `flowctl worker`)."""

import asyncio

from service import app
from service.settings import Settings

if __name__ == "__main__":
    settings = Settings()
    asyncio.run(app.main(settings))
