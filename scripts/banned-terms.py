#!/usr/bin/env python3
"""Makes data/banned-global.txt, passback's global list of banned password terms, from the
password frequency list of the zxcvbn crate (MIT licence; see data/README.md).

    scripts/banned-terms.py <path of zxcvbn-3.1.1/src/frequency_lists.rs> > data/banned-global.txt

Each listed password, most common first, is reduced to its base term: lower case, the digits
and symbols around it cut off, look-alikes inside it read as letters (p@ssw0rd: password).
Terms of 4 to 16 letters are kept, each once, up to COUNT of them.
"""
import re
import sys

COUNT = 2000
LOOK_ALIKES = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t", "8": "b", "!": "i"})

source = open(sys.argv[1], encoding="utf-8").read()
passwords = re.search(r'const PASSWORDS: &str = "([^"]*)"', source).group(1).split(",")
seen, terms = set(), []
for p in passwords:
    core = re.sub(r"^[^a-z]+|[^a-z]+$", "", p.lower())
    term = core.translate(LOOK_ALIKES)
    if 4 <= len(term) <= 16 and term.isalpha() and term.isascii() and term not in seen:
        seen.add(term)
        terms.append(term)
    if len(terms) == COUNT:
        break
print("# passback's global banned password terms: see data/README.md. One per line, most common first.")
print("\n".join(terms))
