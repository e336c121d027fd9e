"""django-redis `delete_pattern` on one pattern, timed around the call only
(Django's import and setup are left out, in its favour). Prints one JSON line.

Usage: django_delete.py REDIS_URL PATTERN ITERSIZE
"""

import json
import sys
import time

import django
from django.conf import settings


def identity_key(key, key_prefix, version):
    # The application's keys are stored verbatim (`tenant:{id}:…`), without
    # Django's default `prefix:version:` decoration.
    return key


def main():
    url, pattern, itersize = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_FUNCTION": identity_key,
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SOCKET_TIMEOUT": 600,
                },
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    started = time.perf_counter()
    deleted = cache.delete_pattern(pattern, itersize=itersize)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "deleted": deleted}))


if __name__ == "__main__":
    main()
