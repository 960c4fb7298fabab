from c3exp.run import main

main()
