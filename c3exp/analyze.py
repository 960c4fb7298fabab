from c3exp.cli.analyze import main
if __name__ == "__main__":
    main()
