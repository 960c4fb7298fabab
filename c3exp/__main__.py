from c3exp.train import main

main()
