from c3exp.cli.demo import main
if __name__ == "__main__":
    main()
