"""Offline check of a built HTML site: every internal link and image resolves.

    python scripts/check_html_links.py build/docs/html

Every ``href`` / ``src`` that is not an external URL must name a file of the site, and its
``#fragment`` an ``id`` (or ``name``) in that file. Sphinx's linkcheck builder needs the
network; this needs nothing. Exit status 1 with one line per broken link.
"""

import argparse
import html.parser
import os
import sys
import urllib.parse


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and "preconnect" in (attrs.get("rel") or "")):
                self.links.append((tag, attrs[key]))


def _parse(path):
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def broken_links(root):
    pages = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.normpath(os.path.join(folder, name))
                pages[path] = _parse(path)
    if not pages:
        return [f"{root}: no HTML page"]
    broken = []
    for path, page in sorted(pages.items()):
        for tag, link in page.links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or link.startswith("//"):
                continue  # external (http, https, mailto, data): not checked offline
            target = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path))) \
                if url.path else path
            if os.path.isdir(target):
                target = os.path.join(target, "index.html")
            where = os.path.relpath(path, root)
            if not os.path.exists(target):
                broken.append(f"{where}: <{tag}> {link}: no file {os.path.relpath(target, root)}")
            elif url.fragment and target.endswith(".html"):
                ids = pages[target].ids if target in pages else _parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    broken.append(f"{where}: <{tag}> {link}: no id '{url.fragment}' in {os.path.relpath(target, root)}")
    return broken


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", help="the folder of the built HTML (index.html inside)")
    args = parser.parse_args()
    broken = broken_links(args.site)
    for line in broken:
        print(line, file=sys.stderr)
    if broken:
        print(f"{len(broken)} broken internal link(s) in {args.site}", file=sys.stderr)
        return 1
    print(f"{args.site}: every internal link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
