from c3exp.cli.report import main
if __name__ == "__main__":
    main()
