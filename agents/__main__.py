from agents.process import main

main()
