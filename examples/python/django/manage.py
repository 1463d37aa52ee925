#!/usr/bin/env python
"""A Django REST framework project whose API is protected by keyward.

    pip install ./bindings/python django djangorestframework
    cd examples/python/django
    KEYWARD_DB=/tmp/shop-keys python manage.py check
    KEYWARD_DB=/tmp/shop-keys keyward --db /tmp/shop-keys key create shop --scope orders:read --owner acme
    KEYWARD_DB=/tmp/shop-keys python manage.py runserver
    curl -H "X-API-Key: kw_..." http://127.0.0.1:8000/orders
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
