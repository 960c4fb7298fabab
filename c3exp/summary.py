from c3exp.cli.summary import main
if __name__ == "__main__":
    main()
