def main():
    raise SystemExit("cai: not built yet")
